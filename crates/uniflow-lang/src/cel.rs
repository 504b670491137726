//! `cel`: a Common Expression Language expression over the input, bound to `self`.
//!
//! An expression is parsed once, at load, against one environment shared by every CEL program:
//! the standard library plus the `strings`, `math`, `lists` and `encoders` extensions upstream
//! enabled (cel-rust has no `sets` extension). A run builds nothing but a child scope of a root
//! context built once (building a root context re-registers every builtin and costs ~25 µs) and
//! the part of the input the expression reads, converted to CEL values.
//!
//! **Only what is read.** Converting a request payload whole cost ten times what evaluating
//! `self.method == "GET"` does, so at load the expression is searched for what it reads of
//! `self` ([`Reads`]): an expression that only selects fields (`self.body.score`,
//! `has(self.a)`) sees a map holding just those fields; one that uses `self` any other way
//! (`size(self)`, `self[k]`, a comprehension over it) sees all of it. A field selection reaches
//! nothing else of its map, so the difference cannot be observed. The nesting limit therefore
//! applies to what is read. An expression that is `self`, or a chain of field selections on it,
//! is not evaluated at all when the part it names would come back from CEL unchanged
//! ([`round_trips`]): the answer is that part of the input. Nor is a condition of the shape
//! `self.method == "GET"` when the part is a string, integer or boolean like its constant
//! ([`Comparison`]): the two are compared as CEL would.
//!
//! The conversion goes straight from [`Value`] to cel's own value types, never through JSON
//! text: integers stay integers, strings and bytes are borrowed from the input rather than
//! copied, maps keep their string, integer and boolean keys. An error payload becomes a value of
//! type `error` that equals a string when the error, or any error it joins, has exactly that
//! message ([`ErrorValue::is`]), so upstream's `self == "unsupported type"` holds. cel-rust asks
//! only the left operand of `==`, so the error must be on the left. `string(self)` and
//! `self.error()` give its message.
//!
//! The result converts back the same way; a CEL `null` is [`Value::Null`] (upstream's cel-go
//! binding turned it into the integer 0), and durations and timestamps become the strings CEL's
//! own `string()` gives them (`"1.5s"`, RFC 3339).
//!
//! CEL always terminates and has no loops beyond comprehensions over its input, so a run cannot
//! run away; cel-rust offers no way to interrupt one either. A `timeout` is therefore checked
//! when the evaluation ends: a run that took longer fails all the same. Without a timeout the
//! clock is not read at all.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use cel::common::ast::{EntryExpr, Expr, LiteralValue, operators};
use cel::common::traits::Indexer;
use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelOptional,
    CelString, CelUInt, Type,
};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, extensions};
use uniflow_value::{ErrorValue, List, Map, Value};

use crate::{Error, Language, Options, Program};

/// The CEL type of an error payload.
static ERROR_TYPE: Type = error_type();

const fn error_type() -> Type {
    Type::new_unspecified_type("error")
}

/// Deeper values than this are refused rather than converted: a conversion recurses once per
/// level, and a cyclic or absurdly nested value must not overflow the stack.
const MAX_NESTING: usize = 256;

/// The environment and root context every CEL program shares: both are immutable once built.
struct Shared {
    env: Arc<Env>,
    root: Context<'static, 'static>,
}

static SHARED: LazyLock<Shared> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    for extension in [
        extensions::strings,
        extensions::math,
        extensions::lists,
        extensions::encoders,
    ] {
        env.add_extension(extension)
            .expect("the cel extensions declare distinct overloads");
    }
    env.add_type(error_type())
        .expect("no standard type is named `error`");
    env.add_overload(
        "string",
        "error_to_string",
        vec![error_type()],
        error_message,
    )
    .expect("`string` has no overload for `error` yet");
    env.add_member_overload("error", "error_error", error_type(), vec![], error_message)
        .expect("no standard function is named `error`");
    let env = Arc::new(env);
    Shared {
        root: Context::with_env(Arc::clone(&env)),
        env,
    }
});

/// The `cel` language.
pub(crate) struct Cel;

impl Language for Cel {
    fn compile(&self, code: &str, options: &Options) -> Result<Arc<dyn Program>, Error> {
        let program = SHARED.env.compile(code).map_err(|errors| Error::Syntax {
            language: "cel".into(),
            message: errors
                .errors
                .iter()
                .map(|e| format!("{} at line {} column {}", e.msg, e.pos.0, e.pos.1))
                .collect::<Vec<_>>()
                .join("; "),
        })?;
        Ok(Arc::new(CelProgram::new(program, options.timeout)))
    }
}

/// A compiled expression.
struct CelProgram {
    program: cel::Program,
    timeout: Option<Duration>,
    /// What the expression reads of `self`: only that is converted.
    reads: Reads,
    /// The fields selected in turn when the expression is `self` or a chain of field
    /// selections on it; its answer is then that part of the input.
    path: Option<Vec<String>>,
    /// The expression when it compares a part of `self` with a constant.
    comparison: Option<Comparison>,
}

/// `self.a.b == c` or `!=` (either way round), `c` a string, integer or boolean constant: a
/// condition's commonest shape, answered without CEL when the part is a value of `c`'s kind,
/// as CEL compares two of those by value. Anything else (a missing field, another kind, an
/// error payload, which equals the strings it `is`) is left to CEL.
struct Comparison {
    path: Vec<String>,
    constant: Value,
    equal: bool,
}

impl Comparison {
    fn of(expr: &Expr) -> Option<Comparison> {
        let Expr::Call(call) = expr else {
            return None;
        };
        let equal = match call.func_name.as_str() {
            operators::EQUALS => true,
            operators::NOT_EQUALS => false,
            _ => return None,
        };
        let ([a, b], None) = (call.args.as_slice(), &call.target) else {
            return None;
        };
        let (path, constant) = match (self_path(&a.expr), self_path(&b.expr)) {
            (Some(path), None) => (path, &b.expr),
            (None, Some(path)) => (path, &a.expr),
            _ => return None,
        };
        let constant = match constant {
            Expr::Literal(LiteralValue::String(s)) => Value::from(s.inner().to_owned()),
            Expr::Literal(LiteralValue::Int(i)) => Value::Int(*i.inner()),
            Expr::Literal(LiteralValue::Boolean(b)) => Value::Bool(*b.inner()),
            _ => return None,
        };
        Some(Comparison {
            path: path.into_iter().map(str::to_owned).collect(),
            constant,
            equal,
        })
    }

    /// The answer, when the part compared is a value of the constant's kind.
    fn answer(&self, input: &Value) -> Option<Value> {
        let part = self
            .path
            .iter()
            .try_fold(input, |at, field| at.as_map()?.get(field))?;
        let comparable = matches!(
            (part, &self.constant),
            (Value::String(_), Value::String(_))
                | (Value::Int(_), Value::Int(_))
                | (Value::Bool(_), Value::Bool(_))
        );
        comparable.then(|| Value::Bool((*part == self.constant) == self.equal))
    }
}

impl Program for CelProgram {
    fn run(&self, input: Value) -> Result<Value, ErrorValue> {
        let start = self.timeout.map(|_| Instant::now());
        let output = match (&self.comparison, self.path.as_deref()) {
            (Some(comparison), _) => comparison
                .answer(&input)
                .map_or_else(|| self.eval(&input), Ok),
            (None, Some(path)) => pass_through(input, path).or_else(|input| self.eval(&input)),
            (None, None) => self.eval(&input),
        };
        if let (Some(start), Some(timeout)) = (start, self.timeout)
            && start.elapsed() > timeout
        {
            return Err(ErrorValue::new(format!(
                "cel run exceeded its timeout of {timeout:?}"
            )));
        }
        output
    }
}

impl CelProgram {
    fn new(program: cel::Program, timeout: Option<Duration>) -> CelProgram {
        let expression = &program.expression().expr;
        let mut reads = Reads::Fields(Vec::new());
        reads.collect(expression);
        let path = self_path(expression).map(|p| p.into_iter().map(str::to_owned).collect());
        let comparison = Comparison::of(expression);
        CelProgram {
            program,
            timeout,
            reads,
            path,
            comparison,
        }
    }

    fn eval(&self, input: &Value) -> Result<Value, ErrorValue> {
        let this = SelfVar(match &self.reads {
            Reads::Whole => to_cel(input, 0)?,
            fields => to_cel_reading(input, fields, 0)?,
        });
        // The root lives for `'static`; narrowing its lifetimes lets the child scope borrow
        // `this`, which borrows the input.
        let root: &Context<'_, '_> = &SHARED.root;
        let mut scope = root.new_inner_scope();
        scope.set_variable_resolver(&this);
        let result = cel::Value::resolve_val(self.program.expression(), &scope)
            .map_err(|e| execution_error(&e))?;
        from_cel(result.as_ref(), 0)
    }
}

/// The part of `input` at `path` (fields selected in turn), when CEL would answer that part
/// unchanged; otherwise `input` back.
fn pass_through(input: Value, path: &[String]) -> Result<Value, Value> {
    if path.is_empty() {
        return if round_trips(&input, 0) {
            Ok(input)
        } else {
            Err(input)
        };
    }
    let part = path
        .iter()
        .try_fold(&input, |at, field| at.as_map()?.get(field))
        .filter(|part| round_trips(part, path.len()))
        .cloned();
    part.ok_or(input)
}

/// Resolves `self` without a map insertion or a `String` for its name per run.
struct SelfVar<'v>(Box<dyn Val + 'v>);

impl VariableResolver for SelfVar<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        (variable == "self").then(|| CowVal::Borrowed(self.0.as_ref()))
    }
}

fn execution_error(e: &ExecutionError) -> ErrorValue {
    ErrorValue::new(e.to_string())
}

fn too_deep() -> ErrorValue {
    ErrorValue::new(format!("value nests deeper than {MAX_NESTING} levels"))
}

/// What an expression reads of a value.
#[derive(Debug, PartialEq)]
enum Reads {
    /// The value itself: it is used other than by selecting fields of it.
    Whole,
    /// Only these fields of it, each read as it says. A value that is not a map is read whole
    /// all the same, so that selecting a field of it fails as it would.
    Fields(Vec<(String, Reads)>),
}

impl Reads {
    /// Notes that the expression reads the value at `path`, whole.
    fn add(&mut self, path: &[&str]) {
        let Reads::Fields(fields) = self else {
            return;
        };
        let Some((first, rest)) = path.split_first() else {
            *self = Reads::Whole;
            return;
        };
        let i = match fields.iter().position(|(field, _)| field == first) {
            Some(i) => i,
            None => {
                fields.push(((*first).to_owned(), Reads::Fields(Vec::new())));
                fields.len() - 1
            }
        };
        fields[i].1.add(rest);
    }

    /// Notes what `expr` reads of `self`. Every use of the input starts at the identifier
    /// `self`; a use other than a chain of field selections (a presence test included) reads
    /// the value it starts from whole. An identifier `self` that a comprehension binds is
    /// counted as the input too, which only converts more than needed.
    fn collect(&mut self, expr: &Expr) {
        if let Some(path) = self_path(expr) {
            self.add(&path);
            return;
        }
        match expr {
            Expr::Select(select) if select.test => match self_path(&select.operand.expr) {
                Some(mut path) => {
                    path.push(&select.field);
                    self.add(&path);
                }
                None => self.collect(&select.operand.expr),
            },
            Expr::Select(select) => self.collect(&select.operand.expr),
            Expr::Call(call) => {
                for e in call.target.iter().map(|t| &**t).chain(&call.args) {
                    self.collect(&e.expr);
                }
            }
            Expr::Comprehension(c) => {
                for e in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    self.collect(&e.expr);
                }
            }
            Expr::List(list) => {
                for e in &list.elements {
                    self.collect(&e.expr);
                }
            }
            Expr::Map(cel::common::ast::MapExpr { entries })
            | Expr::Struct(cel::common::ast::StructExpr { entries, .. }) => {
                for entry in entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(e) => {
                            self.collect(&e.key.expr);
                            self.collect(&e.value.expr);
                        }
                        EntryExpr::StructField(f) => self.collect(&f.value.expr),
                    }
                }
            }
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
}

/// The fields `expr` selects in turn from `self`, when it is `self` or a chain of field
/// selections (not presence tests) on it.
fn self_path(expr: &Expr) -> Option<Vec<&str>> {
    let mut path = Vec::new();
    let mut at = expr;
    loop {
        match at {
            Expr::Ident(name) if name == "self" => {
                path.reverse();
                return Some(path);
            }
            Expr::Select(select) if !select.test => {
                path.push(select.field.as_str());
                at = &select.operand.expr;
            }
            _ => return None,
        }
    }
}

/// Whether `value`, at `depth` in the input, comes back from CEL as it went in: it is not too
/// deep to convert, its maps have only keys CEL keeps, and it holds no unsigned integer that
/// CEL would give back as a signed one.
fn round_trips(value: &Value, depth: usize) -> bool {
    depth <= MAX_NESTING && holds(value, depth)
}

/// [`round_trips`] for a value whose own depth is known to be within the limit. A request map
/// is mostly scalars, so the limit is checked once per container rather than per element.
fn holds(value: &Value, depth: usize) -> bool {
    let element = |v: &Value| match v {
        Value::List(_) | Value::Map(_) | Value::Uint(_) => holds(v, depth + 1),
        _ => true,
    };
    match value {
        Value::Uint(u) => i64::try_from(*u).is_err(),
        Value::List(items) => {
            items.is_empty() || (depth < MAX_NESTING && items.iter().all(element))
        }
        Value::Map(map) => {
            map.is_empty()
                || (depth < MAX_NESTING
                    && map.entries().iter().all(|(k, v)| {
                        let key = match k {
                            Value::String(_) | Value::Int(_) | Value::Bool(_) => true,
                            Value::Uint(u) => i64::try_from(*u).is_err(),
                            _ => false,
                        };
                        key && element(v)
                    }))
        }
        Value::Null
        | Value::Bool(_)
        | Value::Int(_)
        | Value::Float(_)
        | Value::String(_)
        | Value::Bytes(_)
        | Value::Error(_) => true,
    }
}

/// Converts what `reads` says of a payload: a map read only by its fields becomes a
/// [`Fields`] of just those fields that it has.
fn to_cel_reading<'v>(
    value: &'v Value,
    reads: &'v Reads,
    depth: usize,
) -> Result<Box<dyn Val + 'v>, ErrorValue> {
    let (Reads::Fields(fields), Value::Map(map)) = (reads, value) else {
        return to_cel(value, depth);
    };
    if depth > MAX_NESTING {
        return Err(too_deep());
    }
    let mut found = Vec::with_capacity(fields.len());
    for (field, reads) in fields {
        if let Some(v) = map.get(field) {
            found.push((field.as_str(), to_cel_reading(v, reads, depth + 1)?));
        }
    }
    Ok(Box::new(Fields(found)))
}

/// The fields of a map that an expression selects, and nothing else of it.
///
/// [`Reads`] hands one only to field selections (`.f`, `has(x.f)`), which ask a value for its
/// type and then [`Indexer::get`] with a string key; for those it answers as a `map` would:
/// a missing field is `NoSuchKey`. It is a list of a few names rather than a hash map, because
/// building and probing a hash map cost more than the rest of a condition like
/// `self.method == "GET"`.
#[derive(Debug)]
struct Fields<'v>(Vec<(&'v str, Box<dyn Val + 'v>)>);

impl Val for Fields<'_> {
    fn get_type(&self) -> &Type {
        &cel::common::types::MAP_TYPE
    }

    fn cel_type() -> &'static Type {
        &cel::common::types::MAP_TYPE
    }

    fn as_indexer<'b, 'w>(&'b self) -> Option<&'b (dyn Indexer + 'w)>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn equals(&self, other: &dyn Val) -> bool {
        self.as_map().equals(other)
    }

    fn clone_as_boxed<'w>(&self) -> Box<dyn Val + 'w>
    where
        Self: 'w,
    {
        Box::new(self.as_map())
    }
}

impl Fields<'_> {
    /// The same entries as a CEL map, for anything but a field selection (nothing asks).
    fn as_map<'w>(&self) -> CelMap<'w>
    where
        Self: 'w,
    {
        CelMap::from(
            self.0
                .iter()
                .map(|(k, v)| (CelMapKey::from(*k), v.clone_as_boxed()))
                .collect::<HashMap<_, _>>(),
        )
    }
}

impl Indexer for Fields<'_> {
    fn get<'b, 'w>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'w>, ExecutionError>
    where
        Self: 'w,
    {
        let Some(name) = idx.downcast_ref::<CelString>() else {
            // Not a field name: whatever a map says of such a key.
            return self
                .as_map()
                .get(idx)
                .map(|v| CowVal::Owned(v.into_owned()));
        };
        let name = name.inner();
        self.0
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, v)| CowVal::Borrowed(v.as_ref()))
            .ok_or_else(|| ExecutionError::NoSuchKey(Arc::new(name.to_owned())))
    }

    fn steal<'w>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'w>, ExecutionError>
    where
        Self: 'w,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

/// Converts a payload into a CEL value that borrows its strings and bytes.
fn to_cel(value: &Value, depth: usize) -> Result<Box<dyn Val + '_>, ErrorValue> {
    if depth > MAX_NESTING {
        return Err(too_deep());
    }
    Ok(match value {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Int(i) => Box::new(CelInt::from(*i)),
        Value::Uint(u) => Box::new(CelUInt::from(*u)),
        Value::Float(f) => Box::new(CelDouble::from(*f)),
        Value::String(s) => Box::new(CelString::from(&**s)),
        Value::Bytes(b) => Box::new(CelBytes::from(&**b)),
        Value::List(items) => Box::new(CelList::from(
            items
                .iter()
                .map(|v| to_cel(v, depth + 1))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Map(map) => {
            let mut entries = HashMap::with_capacity(map.len());
            for (k, v) in map.iter() {
                // CEL keys are strings, integers and booleans only; an entry under another
                // kind of key (possible in YAML) cannot be reached from CEL and is left out.
                let key = match k {
                    Value::String(s) => CelMapKey::from(&**s),
                    Value::Int(i) => CelMapKey::from(*i),
                    Value::Uint(u) => CelMapKey::from(*u),
                    Value::Bool(b) => CelMapKey::from(*b),
                    _ => continue,
                };
                entries.insert(key, to_cel(v, depth + 1)?);
            }
            Box::new(CelMap::from(entries))
        }
        Value::Error(e) => Box::new(CelError(e.clone())),
    })
}

/// Converts a CEL result back into a payload.
fn from_cel(value: &dyn Val, depth: usize) -> Result<Value, ErrorValue> {
    if depth > MAX_NESTING {
        return Err(too_deep());
    }
    if value.downcast_ref::<CelNull>().is_some() {
        Ok(Value::Null)
    } else if let Some(b) = value.downcast_ref::<CelBool>() {
        Ok(Value::Bool(*b.inner()))
    } else if let Some(i) = value.downcast_ref::<CelInt>() {
        Ok(Value::Int(*i.inner()))
    } else if let Some(u) = value.downcast_ref::<CelUInt>() {
        Ok(Value::from(*u.inner()))
    } else if let Some(f) = value.downcast_ref::<CelDouble>() {
        Ok(Value::Float(*f.inner()))
    } else if let Some(s) = value.downcast_ref::<CelString>() {
        Ok(Value::from(s.inner().to_owned()))
    } else if let Some(b) = value.downcast_ref::<CelBytes>() {
        Ok(Value::Bytes(uniflow_value::Bytes::copy_from_slice(
            b.inner(),
        )))
    } else if let Some(list) = value.downcast_ref::<CelList>() {
        Ok(Value::List(
            list.inner()
                .iter()
                .map(|v| from_cel(v.as_ref(), depth + 1))
                .collect::<Result<List, _>>()?,
        ))
    } else if let Some(map) = value.downcast_ref::<CelMap>() {
        Ok(Value::Map(
            map.inner()
                .iter()
                .map(|(k, v)| {
                    Ok((
                        from_cel(k.inner(), depth + 1)?,
                        from_cel(v.as_ref(), depth + 1)?,
                    ))
                })
                .collect::<Result<Map, ErrorValue>>()?,
        ))
    } else if let Some(e) = value.downcast_ref::<CelError>() {
        Ok(Value::Error(e.0.clone()))
    } else if let Some(optional) = value.downcast_ref::<CelOptional>() {
        optional
            .option()
            .map_or(Ok(Value::Null), |v| from_cel(v, depth + 1))
    } else {
        // Durations, timestamps and type values: what CEL's own `string()` makes of them.
        let as_string = SHARED
            .env
            .find_overload("string", &[CowVal::Borrowed(value)])
            .ok_or_else(|| {
                ErrorValue::new(format!(
                    "cel result of type `{}` has no payload form",
                    value.get_type().name()
                ))
            })?;
        let string = as_string(vec![CowVal::Borrowed(value)]).map_err(|e| execution_error(&e))?;
        from_cel(string.as_ref(), depth + 1)
    }
}

/// An error payload as a CEL value.
#[derive(Debug, Clone)]
struct CelError(ErrorValue);

impl Val for CelError {
    fn get_type(&self) -> &Type {
        &ERROR_TYPE
    }

    fn cel_type() -> &'static Type {
        &ERROR_TYPE
    }

    fn equals(&self, other: &dyn Val) -> bool {
        if let Some(s) = other.downcast_ref::<CelString>() {
            self.0.is(s.inner())
        } else if let Some(e) = other.downcast_ref::<CelError>() {
            self.0.message() == e.0.message()
        } else {
            false
        }
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl StaticVal for CelError {}

/// `string(e)` and `e.error()`: the error's message.
fn error_message<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let error = args
        .first()
        .and_then(|v| v.downcast_ref::<CelError>())
        .ok_or_else(|| ExecutionError::UnexpectedType {
            got: args
                .first()
                .map_or("nothing", |v| v.get_type().name())
                .to_owned(),
            want: ERROR_TYPE.name().to_owned(),
        })?;
    Ok(CowVal::owned(CelString::from(
        error.0.message().to_string(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(code: &str) -> CelProgram {
        CelProgram::new(SHARED.env.compile(code).unwrap(), None)
    }

    fn fields(entries: Vec<(&str, Reads)>) -> Reads {
        Reads::Fields(
            entries
                .into_iter()
                .map(|(k, r)| (k.to_owned(), r))
                .collect(),
        )
    }

    #[test]
    fn reads_are_the_selected_fields_or_the_whole() {
        use Reads::Whole;
        let cases = [
            ("self", Whole),
            ("1 + 2", fields(vec![])),
            ("self.method == 'GET'", fields(vec![("method", Whole)])),
            (
                "self.body.score > 1 && has(self.query.limit) && self.body.name != ''",
                fields(vec![
                    ("body", fields(vec![("score", Whole), ("name", Whole)])),
                    ("query", fields(vec![("limit", Whole)])),
                ]),
            ),
            ("self.a.b + size(self.a)", fields(vec![("a", Whole)])),
            (
                "self.items.filter(x, x > 1)",
                fields(vec![("items", Whole)]),
            ),
            ("size(self)", Whole),
            ("self['a']", Whole),
            (
                "self.a.exists(x, x == self.b)",
                fields(vec![("a", Whole), ("b", Whole)]),
            ),
            (
                "[self.a, {'k': self.b.c}]",
                fields(vec![("a", Whole), ("b", fields(vec![("c", Whole)]))]),
            ),
            ("self.error()", Whole),
        ];
        for (code, want) in cases {
            assert_eq!(compiled(code).reads, want, "{code}");
        }
    }

    #[test]
    fn comparisons_of_a_field_with_a_constant_are_recognised() {
        for code in [
            "self.method == 'GET'",
            "'GET' != self.method",
            "self == 1",
            "self.a.b == true",
        ] {
            assert!(compiled(code).comparison.is_some(), "{code}");
        }
        for code in [
            "self.a == self.b",
            "self.a == 1.5",
            "self.a < 1",
            "self['a'] == 1",
            "self.a + 1 == 2",
        ] {
            assert!(compiled(code).comparison.is_none(), "{code}");
        }
    }

    #[test]
    fn only_self_and_field_chains_pass_through() {
        assert_eq!(compiled("self").path, Some(vec![]));
        assert_eq!(
            compiled("self.body.score").path,
            Some(vec!["body".to_owned(), "score".to_owned()])
        );
        for code in ["self.a + 1", "has(self.a)", "self['a']", "self.a.size()"] {
            assert_eq!(compiled(code).path, None, "{code}");
        }
    }

    fn deep(levels: usize) -> Value {
        (0..levels).fold(Value::Int(1), |v, _| Value::from(vec![v]))
    }

    /// Reading only some fields, and passing a part of the input through, answer what
    /// converting the whole input answers, error messages included, but for a value too deep
    /// to convert.
    #[test]
    fn partial_reads_answer_as_whole_ones() {
        let odd_keys = Value::Map(
            [
                (Value::Float(1.5), Value::Int(1)),
                (Value::from("a"), Value::Int(2)),
            ]
            .into_iter()
            .collect(),
        );
        let inputs = [
            Value::Null,
            Value::from("text"),
            Value::Uint(7),
            Value::Uint(u64::MAX),
            Value::Error(ErrorValue::new("boom")),
            Value::Map([("a", 1)].into()),
            Value::Map([("a", Value::Uint(1))].into()),
            Value::Map([("a", Value::from("x"))].into()),
            Value::Map([("a", odd_keys.clone())].into()),
            Value::Map(
                [(
                    "a",
                    Value::Map([("b", Value::from(vec![Value::Null]))].into()),
                )]
                .into(),
            ),
            Value::Map([("a", Value::Map([("b", deep(MAX_NESTING))].into()))].into()),
            Value::Map([("a", Value::Map([("b", deep(MAX_NESTING - 1))].into()))].into()),
            Value::Map(
                [
                    (Value::Uint(3), Value::Int(1)),
                    (Value::from("a"), Value::Int(2)),
                ]
                .into_iter()
                .collect(),
            ),
            odd_keys,
            deep(MAX_NESTING),
            deep(MAX_NESTING + 1),
        ];
        let codes = [
            "self",
            "self.a",
            "self.a.b",
            "self.nope",
            "self.a == 1",
            "1 != self.a",
            "self.a == 'x'",
            "'x' == self.a",
            "self.a.b == true",
            "self == 'text'",
            "self == 'boom'",
            "self != 7",
            "has(self.a) && has(self.a.b)",
            "self.a.b == [null]",
            "self.a + 1",
            "{'k': self.a}",
        ];
        for code in codes {
            let program = compiled(code);
            let mut whole = compiled(code);
            whole.reads = Reads::Whole;
            whole.path = None;
            whole.comparison = None;
            for input in &inputs {
                let got = program.run(input.clone()).map_err(|e| e.to_string());
                let want = whole.run(input.clone()).map_err(|e| e.to_string());
                // Whole, a value too deep anywhere fails; read in part, only what is read
                // must not be (see the next test).
                if want.as_ref().is_err_and(|e| e.contains("nests deeper")) {
                    continue;
                }
                assert_eq!(got, want, "{code} on {input:?}");
            }
        }
    }

    /// The nesting limit holds for what an expression reads: a deep value elsewhere in the
    /// input is not converted, so it is no error.
    #[test]
    fn the_nesting_limit_applies_to_what_is_read() {
        let input = Value::Map([("a", Value::Int(1)), ("b", deep(MAX_NESTING + 1))].into());
        assert_eq!(
            compiled("self.a + 1").run(input.clone()).ok(),
            Some(Value::Int(2))
        );
        assert!(compiled("self").run(input.clone()).is_err());
        assert!(compiled("self.b").run(input).is_err());
    }
}
