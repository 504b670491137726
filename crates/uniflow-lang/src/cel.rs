//! `cel`: a Common Expression Language expression over the input, bound to `self`.
//!
//! An expression is parsed once, at load, against one environment shared by every CEL program:
//! the standard library plus the `strings`, `math`, `lists` and `encoders` extensions upstream
//! enabled (cel-rust has no `sets` extension). A run builds nothing but a child scope of a root
//! context built once (building a root context re-registers every builtin and costs ~25 µs) and
//! the input converted to CEL values.
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
        Ok(Arc::new(CelProgram {
            program,
            timeout: options.timeout,
        }))
    }
}

/// A compiled expression.
struct CelProgram {
    program: cel::Program,
    timeout: Option<Duration>,
}

impl Program for CelProgram {
    fn run(&self, input: Value) -> Result<Value, ErrorValue> {
        let start = self.timeout.map(|_| Instant::now());
        let output = self.eval(&input);
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
    fn eval(&self, input: &Value) -> Result<Value, ErrorValue> {
        let this = SelfVar(to_cel(input, 0)?);
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
