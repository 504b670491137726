//! `javascript`: an ES module whose default export is called with each input.
//!
//! The code is parsed once, at load, by oxc, which reports syntax errors with their line and
//! column. The module is then rewritten into a *factory*: a function whose body is the module's
//! top-level code, with `export default X` turned into `module.exports = X`, other `export`
//! keywords dropped, and `module`/`exports` as parameters, so CommonJS (`module.exports = fn`)
//! works as well. `import` is refused: a snippet has nothing to import.
//!
//! **State.** Every run calls the factory afresh and then the function it exports, so the
//! module's top-level bindings are new on every run and nothing a run keeps there reaches the
//! next one; the price is that top-level code runs once per packet, so it should stay cheap.
//! A module whose top level cannot hold state (it only declares functions that are only ever
//! called, constants of primitive values, and the exported function; see [`stateless`]) is
//! the exception: its factory runs once per engine and every run calls the same function, which
//! no script can tell apart from a fresh one and saves about half of what a small run costs.
//! The global object is frozen and the built-in constructors and their prototypes cannot gain
//! properties, so a run cannot leave globals behind either. What is not isolated: a run that
//! *replaces* an existing method of a built-in prototype (`Array.prototype.map = ...`) changes
//! it for later runs on the same engine.
//!
//! **Engines.** A QuickJS runtime and context cost ~100 µs to build, so each program keeps a
//! small pool of them (one per concurrent caller, at most one per CPU kept idle); a run takes
//! one from the pool, or builds one when all are busy, and puts it back after. Each runtime has
//! a memory limit and a stack limit, so a huge allocation or a deep recursion fails that run
//! with an error rather than the process; an engine that ran out of memory or was interrupted
//! is dropped rather than reused.
//!
//! **Timeout.** With a `timeout`, QuickJS's interrupt handler compares the clock with the run's
//! deadline and stops a runaway script; the run fails with a timeout error.
//!
//! **Long runs.** A run starts on the thread that calls it, an async worker that also serves
//! other requests. One still going after a slice of a millisecond is interrupted and started
//! again on a thread of its own (see [`SLICE`]), so a script that computes for long, or spins
//! until its timeout, never holds up the requests that share its worker.
//!
//! **Limits.** A run that hits one fails with a message naming it: the heap (64 MiB, and the
//! stage: converting the input, running, converting the result), the native stack, the nesting
//! of values, or the timeout.
//!
//! **Values.** The input arrives as JavaScript values: maps as objects, lists as arrays, bytes
//! as a `Uint8Array`, and an error payload as an `Error` whose `error()` method returns its
//! message (upstream's `e.error()`). Maps are proxies whose entries convert when first read, so
//! a script pays for what it reads, not for the whole payload; they behave as the plain,
//! writable objects scripts were given before (see [`input`] for how, and for what differs
//! at the edges). The result comes back the way `JSON.stringify` sees
//! it: `undefined`, functions and symbols become `null` (and are left out of objects), objects
//! with `toJSON` (a `Date`) are converted through it, a number with no fraction is an integer,
//! a `Uint8Array` or `ArrayBuffer` is bytes, and a returned `Error` is an error payload. A
//! function that returns a promise (an `async` one) has it settled before the result converts.
//! A thrown exception fails the run with its message (prefixed with its name, unless it is a
//! plain `Error`, so `throw new Error("unsupported type")` can be matched exactly).
//!
//! **Handing the input back.** A result that is the input, or a part of it, untouched answers
//! with the payload it came from instead of a copy, and a changed one shares the parts that
//! did not change (see [`input`]).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use oxc::allocator::Allocator;
use oxc::ast::AstKind;
use oxc::ast::ast::{
    BindingPattern, Declaration, ExportDefaultDeclarationKind, Expression, Statement,
    UnaryOperator, VariableDeclaration, VariableDeclarationKind,
};
use oxc::diagnostics::OxcDiagnostic;
use oxc::parser::Parser;
use oxc::semantic::{Semantic, SemanticBuilder};
use oxc::span::{GetSpan, SourceType, Span};
use rquickjs::promise::PromiseState;
use rquickjs::{Coerced, Context, Ctx, Function, Object, Runtime, Value as JsValue};
use uniflow_value::{ErrorValue, Value};

use crate::{Error, Language, Options, Program};

mod input;

/// The heap one engine may use, built-ins included (about 120 KiB of it).
const MEMORY_LIMIT: usize = 64 << 20;

/// The native stack one run may use below the point where it was called. A JavaScript call
/// nests over a kilobyte of native frames in a release build (several times that unoptimised),
/// so this allows a recursion about 400 deep (measured; about 160 in a debug build). It must stay well under what is left of the
/// smallest thread stack a run may start on (tokio's workers have 2 MiB, and a snippet may sit
/// at the end of a long chain of nodes), or a deep recursion would hit the guard page, and
/// abort the process, before QuickJS notices.
const STACK_LIMIT: usize = 512 << 10;

/// The global (frozen, not enumerable) under which an engine keeps its helpers: an array,
/// read by index, which costs less than by name.
const HIDDEN: &str = "__uniflow";

/// The index in [`HIDDEN`] of the function a run calls with its input: the module's function
/// itself when its factory is reused, else one that calls the factory first.
const RUN: u32 = 0;

/// Installs the helpers, then locks the globals down. Called once per engine with the factory,
/// the native traps of the input's proxies ([`input::natives`]) and whether the factory is
/// called once here rather than once per run ([`Factory::reusable`]).
const SETUP: &str = r#"(function (factory, natives, reuse) {
  "use strict";
  class PayloadError extends Error {
    error() { return this.message; }
  }
  const exported = () => {
    const module = { exports: {} };
    let f = factory(module, module.exports);
    if (typeof f !== "function" && f !== null && typeof f === "object" && typeof f.default === "function") {
      f = f.default;
    }
    if (typeof f !== "function") {
      throw new TypeError("the module exports no function: write `export default function (input) { ... }`");
    }
    return f;
  };
  const latin1 = (v) => {
    const bytes = v instanceof ArrayBuffer ? new Uint8Array(v) : v;
    let s = "";
    for (let i = 0; i < bytes.length; i += 8192) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    }
    return s;
  };
  // The prototype of the handlers of the input's proxies (see input.rs): reads are answered
  // natively; a change first fills the target and takes the traps away, then is made on the
  // target. Reflect's functions are taken now, so replacing them later changes nothing here.
  const { set, defineProperty, deleteProperty, preventExtensions, setPrototypeOf } = Reflect;
  const fill = natives.fill;
  // Indexes, not names: QuickJS reads an index without looking up an atom (see input.rs).
  const traps = Object.freeze({
    __proto__: null,
    0: [],
    1: (message) => new PayloadError(message),
    get: natives.get,
    has: natives.has,
    ownKeys: natives.ownKeys,
    getOwnPropertyDescriptor: natives.getOwnPropertyDescriptor,
    set(t, k, v, r) { fill(this, t); return set(t, k, v, r); },
    defineProperty(t, k, d) { fill(this, t); return defineProperty(t, k, d); },
    deleteProperty(t, k) { fill(this, t); return deleteProperty(t, k); },
    preventExtensions(t) { fill(this, t); return preventExtensions(t); },
    setPrototypeOf(t, p) { fill(this, t); return setPrototypeOf(t, p); },
  });
  // The helpers by index (see `RUN` and the others): the handlers' `Object.create(traps)`
  // keeps their shape alive between runs, so QuickJS finds it rather than building it again
  // for every run's first proxy.
  Object.defineProperty(globalThis, "__uniflow", {
    value: Object.freeze([reuse ? exported() : (input) => exported()(input), latin1, traps, Object.create(traps)]),
  });
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    const v = globalThis[name];
    if ((typeof v === "object" && v !== null) || typeof v === "function") {
      Object.preventExtensions(v);
      const p = v.prototype;
      if (typeof p === "object" && p !== null) Object.preventExtensions(p);
    }
  }
  Object.preventExtensions(PayloadError);
  Object.preventExtensions(PayloadError.prototype);
  Object.freeze(globalThis);
})"#;

/// The `javascript` language.
pub(crate) struct JavaScript;

impl Language for JavaScript {
    fn compile(&self, code: &str, options: &Options) -> Result<Arc<dyn Program>, Error> {
        compile("javascript", code, options)
    }
}

/// Compiles an ES module (or a CommonJS script) for `language`, which names it in errors.
pub(crate) fn compile(
    language: &'static str,
    code: &str,
    options: &Options,
) -> Result<Arc<dyn Program>, Error> {
    let factory = factory(language, code)?;
    // Building the first engine now surfaces anything QuickJS rejects at load, not on the
    // first packet, and leaves that engine warm for it.
    let engine = Engine::new(language, &factory)?;
    let max_idle = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(Arc::new(JsProgram {
        language,
        factory,
        timeout: options.timeout,
        idle: Mutex::new(vec![engine]),
        max_idle,
        slow: AtomicU32::new(0),
    }))
}

/// A syntax error from oxc, with the line and column (both from 1) where it was found: the
/// primary label's, else the last one's (a redeclaration labels the first declaration too).
pub(crate) fn syntax_error(language: &str, code: &str, diagnostic: &OxcDiagnostic) -> Error {
    let mut message = diagnostic.message.to_string();
    let label = diagnostic
        .labels
        .iter()
        .find(|l| l.primary())
        .or_else(|| diagnostic.labels.iter().max_by_key(|l| l.offset()));
    if let Some(label) = label {
        if let Some(text) = label.label().filter(|t| !t.is_empty()) {
            let _ = write!(message, " ({text})");
        }
        let (line, column) = position(code, label.offset());
        let _ = write!(message, " at line {line} column {column}");
    }
    Error::Syntax {
        language: language.to_owned(),
        message,
    }
}

fn refused(language: &str, code: &str, span: Span, what: &str) -> Error {
    let (line, column) = position(code, span.start);
    Error::Syntax {
        language: language.to_owned(),
        message: format!("{what} at line {line} column {column}"),
    }
}

/// The line and column (both from 1, the column in characters) of a byte offset.
fn position(code: &str, offset: u32) -> (usize, usize) {
    let offset = (offset as usize).min(code.len());
    let before = code.get(..offset).unwrap_or(code);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A module rewritten into a factory (see [`factory`]).
struct Factory {
    source: String,
    /// Whether the module's top level holds no state a run could change or observe, so one
    /// call of the factory per engine serves every run (see [`stateless`]).
    reusable: bool,
}

/// Parses a module and rewrites it into the source of a factory function (see the module
/// docs). The rewrite only replaces `export` keywords, so every line keeps its number.
fn factory(language: &str, code: &str) -> Result<Factory, Error> {
    let allocator = Allocator::default();
    let parsed = Parser::new(&allocator, code, SourceType::mjs()).parse();
    if let Some(diagnostic) = parsed.diagnostics.first() {
        return Err(syntax_error(language, code, diagnostic));
    }
    if parsed.panicked {
        return Err(Error::Syntax {
            language: language.to_owned(),
            message: "the parser gave up".to_owned(),
        });
    }
    // The nodes are needed to tell how a function is used (see `stateless`).
    let semantic = SemanticBuilder::new()
        .with_check_syntax_error(true)
        .with_build_nodes(true)
        .build(&parsed.program);
    if let Some(diagnostic) = semantic.diagnostics.first() {
        return Err(syntax_error(language, code, diagnostic));
    }

    // (start, end, replacement) byte ranges of `code`, in order.
    let mut edits: Vec<(u32, u32, &str)> = Vec::new();
    let mut tail = String::new();
    let mut exports_default = false;
    for statement in &parsed.program.body {
        match statement {
            Statement::ImportDeclaration(d) => {
                return Err(refused(
                    language,
                    code,
                    d.span,
                    "`import` is not supported: a snippet is a single module",
                ));
            }
            Statement::ExportAllDeclaration(d) => {
                return Err(refused(
                    language,
                    code,
                    d.span,
                    "`export * from` is not supported",
                ));
            }
            Statement::ExportFromDeclaration(d) => {
                return Err(refused(
                    language,
                    code,
                    d.span,
                    "`export ... from` is not supported",
                ));
            }
            Statement::ExportDefaultDeclaration(d) => {
                exports_default = true;
                let declaration = d.declaration.span();
                let name = match &d.declaration {
                    ExportDefaultDeclarationKind::FunctionDeclaration(f) => {
                        f.id.as_ref().map(|id| id.name)
                    }
                    ExportDefaultDeclarationKind::ClassDeclaration(c) => {
                        c.id.as_ref().map(|id| id.name)
                    }
                    _ => None,
                };
                if let Some(name) = name {
                    // A named declaration stays a declaration, so the rest of the module can
                    // still refer to it by name.
                    edits.push((d.span.start, declaration.start, ""));
                    let _ = write!(tail, "module.exports = {name};");
                } else {
                    // The `;` keeps a following line that starts with `(` from being read as
                    // a call of the exported value.
                    edits.push((d.span.start, declaration.start, "module.exports = "));
                    edits.push((declaration.end, declaration.end, ";"));
                }
            }
            Statement::ExportDeclaration(d) => {
                edits.push((d.span.start, d.declaration.span().start, ""));
            }
            Statement::ExportNamedDeclaration(d) => {
                edits.push((d.span.start, d.span.end, ""));
                for specifier in &d.specifiers {
                    if specifier.exported.name() == "default" {
                        exports_default = true;
                        let _ = write!(tail, "module.exports = {};", specifier.local.name());
                    }
                }
            }
            _ => {}
        }
    }
    let unresolved = semantic.semantic.scoping().root_unresolved_references();
    let commonjs = unresolved.contains_key("module") || unresolved.contains_key("exports");
    if !exports_default && !commonjs {
        return Err(Error::Syntax {
            language: language.to_owned(),
            message:
                "the module exports no function: write `export default function (input) { ... }`"
                    .to_owned(),
        });
    }

    // The prefix stays on the first line, so positions in QuickJS's messages keep their lines.
    let mut source = String::with_capacity(code.len() + 96 + tail.len());
    source.push_str("(function (module, exports) {\"use strict\";");
    let mut at = 0;
    for (start, end, replacement) in edits {
        source.push_str(&code[at..start as usize]);
        source.push_str(replacement);
        at = end as usize;
    }
    source.push_str(&code[at..]);
    source.push_str("\n;");
    source.push_str(&tail);
    source.push_str("\nreturn module.exports;\n})");
    // A direct `eval` can read a function by its name without a reference oxc could see, and
    // an arrow function at the top level sees the factory's own `arguments`.
    let reusable = !commonjs
        && !unresolved.contains_key("eval")
        && !unresolved.contains_key("arguments")
        && stateless(&parsed.program, &semantic.semantic);
    Ok(Factory { source, reusable })
}

/// Whether calling the module's factory once and its function for every run is the same, to
/// anything a script can observe, as calling both afresh per run: true when the top level only
/// declares functions (not generators), constants of primitive values and the default export
/// (a function), and no function declared there is used other than by calling it. Such a module
/// has no binding a run could change (a constant holds a primitive, and a function object never
/// escapes, so no property can be set on it), and its top level does nothing but declare.
/// Anything else (a `let`, an object or class, a statement with effects, a function passed or
/// read as a value, a generator, whose results share its `prototype`) keeps the factory per
/// run, as does a module that names `eval` or `arguments` (checked by the caller).
fn stateless(program: &oxc::ast::ast::Program<'_>, semantic: &Semantic<'_>) -> bool {
    let mut functions = Vec::new();
    for statement in &program.body {
        let declaration = match statement {
            Statement::EmptyStatement(_) => continue,
            Statement::FunctionDeclaration(f) => {
                functions.push(&**f);
                continue;
            }
            Statement::VariableDeclaration(d) => Some(d),
            Statement::ExportDeclaration(d) => match &d.declaration {
                Declaration::FunctionDeclaration(f) => {
                    functions.push(&**f);
                    continue;
                }
                Declaration::VariableDeclaration(d) => Some(d),
                _ => None,
            },
            Statement::ExportDefaultDeclaration(d) => match &d.declaration {
                ExportDefaultDeclarationKind::FunctionDeclaration(f)
                | ExportDefaultDeclarationKind::FunctionExpression(f) => {
                    functions.push(&**f);
                    continue;
                }
                ExportDefaultDeclarationKind::ArrowFunctionExpression(_) => continue,
                _ => None,
            },
            _ => None,
        };
        if !declaration.is_some_and(|d| constant_primitives(d)) {
            return false;
        }
    }
    // What a generator returns has the function's own `prototype` object as its prototype,
    // which a call would hand out.
    if functions.iter().any(|f| f.generator) {
        return false;
    }
    let scoping = semantic.scoping();
    let nodes = semantic.nodes();
    functions.iter().filter_map(|f| f.id.as_ref()).all(|id| {
        scoping
            .get_resolved_reference_ids(id.symbol_id())
            .iter()
            .all(|&reference| {
                let node = scoping.get_reference(reference).node_id();
                let AstKind::IdentifierReference(name) = nodes.kind(node) else {
                    return false;
                };
                matches!(nodes.parent_kind(node), AstKind::CallExpression(call)
                    if matches!(&call.callee, Expression::Identifier(callee) if callee.span == name.span))
            })
    })
}

/// Whether a declaration is `const` names bound to primitive literals, which no run can change.
fn constant_primitives(declaration: &VariableDeclaration<'_>) -> bool {
    fn primitive(e: &Expression<'_>) -> bool {
        match e {
            Expression::BooleanLiteral(_)
            | Expression::NullLiteral(_)
            | Expression::NumericLiteral(_)
            | Expression::BigIntLiteral(_)
            | Expression::StringLiteral(_) => true,
            Expression::TemplateLiteral(t) => t.expressions.is_empty(),
            Expression::UnaryExpression(u) => {
                matches!(u.operator, UnaryOperator::UnaryNegation)
                    && matches!(
                        u.argument,
                        Expression::NumericLiteral(_) | Expression::BigIntLiteral(_)
                    )
            }
            _ => false,
        }
    }
    declaration.kind == VariableDeclarationKind::Const
        && declaration.declarations.iter().all(|d| {
            matches!(d.id, BindingPattern::BindingIdentifier(_))
                && d.init.as_ref().is_some_and(primitive)
        })
}

/// A compiled module and its pool of engines.
struct JsProgram {
    language: &'static str,
    factory: Factory,
    timeout: Option<Duration>,
    idle: Mutex<Vec<Engine>>,
    max_idle: usize,
    /// How many more runs go straight to a thread of their own; see [`SLICE`].
    slow: AtomicU32,
}

/// How long a run may hold the thread it was called on. Scripts run where they are called, on
/// one of the async runtime's worker threads, because handing every run to another thread
/// would cost more than most scripts do. A run that is still going after this slice is
/// interrupted and started again from the beginning on a thread of its own
/// (`tokio::task::block_in_place`, which hands the worker's other tasks to a new worker), so a
/// busy script delays the requests that share its worker by at most a slice. Starting again is
/// safe because a run cannot be observed from outside: it has no I/O, and its module scope and
/// engine are discarded. The slice spent is the price, paid once per slow streak.
const SLICE: Duration = Duration::from_millis(1);

/// How many runs in a row a program that overran its slice starts on a thread of its own; each
/// one that finishes within a slice counts down, one that does not starts the count again. A
/// script that is slow every time then pays no slice, and one that was slow once goes back to
/// running in place.
const SLOW_STREAK: u32 = 16;

impl Program for JsProgram {
    fn run(&self, input: Value) -> Result<Value, ErrorValue> {
        let started = Clock::now();
        let deadline = self.timeout.map_or(UNARMED, |timeout| {
            let timeout = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            started.saturating_add(timeout).min(UNARMED - 1)
        });
        let slice = u64::try_from(SLICE.as_nanos()).unwrap_or(u64::MAX);
        if self.slow.load(Ordering::Relaxed) == 0 {
            if let Some(result) = self.run_once(&input, deadline, started.saturating_add(slice)) {
                return result;
            }
            self.slow.store(SLOW_STREAK, Ordering::Relaxed);
            return self.run_off_worker(&input, deadline);
        }
        let result = self.run_off_worker(&input, deadline);
        if Clock::now().saturating_sub(started) < slice {
            // Racing runs may both count down from 1; saturating keeps the count sane.
            let _ = self
                .slow
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        } else {
            self.slow.store(SLOW_STREAK, Ordering::Relaxed);
        }
        result
    }
}

impl JsProgram {
    /// One whole run, off the worker thread it is called on (see [`off_worker`]).
    fn run_off_worker(&self, input: &Value, deadline: u64) -> Result<Value, ErrorValue> {
        off_worker(|| self.run_once(input, deadline, UNARMED))
            .unwrap_or_else(|| unreachable!("a run without a slice is never cut"))
    }

    /// One run on an engine from the pool; `None` when the slice ran out first.
    fn run_once(
        &self,
        input: &Value,
        deadline: u64,
        slice: u64,
    ) -> Option<Result<Value, ErrorValue>> {
        // The lock only guards the pop and the push; a run never holds it.
        let engine = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let engine = match engine {
            Some(engine) => engine,
            None => match Engine::new(self.language, &self.factory) {
                Ok(engine) => engine,
                Err(e) => return Some(Err(ErrorValue::new(e.to_string()))),
            },
        };
        let (outcome, reusable) = engine.run(input, deadline, slice, self.timeout);
        if reusable {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < self.max_idle {
                idle.push(engine);
            }
        }
        outcome
    }
}

/// Runs `f` so that it does not hold up the other tasks of the async runtime's worker thread it
/// is called on. Only a multi-thread runtime has other workers to hand them to; elsewhere (no
/// runtime, or a single-threaded one, as in tests) `f` runs as it is.
fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The instant deadlines count from, so one fits an atomic integer.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// No deadline armed.
const UNARMED: u64 = u64::MAX;

/// What the interrupt handler and a run share.
struct Clock {
    /// Nanoseconds since [`EPOCH`] when the current run must stop, or [`UNARMED`].
    deadline: AtomicU64,
    /// Nanoseconds since [`EPOCH`] when the current run must leave its thread, or [`UNARMED`].
    slice: AtomicU64,
    /// Why the handler stopped the current run, if it did.
    stopped: AtomicU8,
}

/// Values of [`Clock::stopped`].
const RUNNING: u8 = 0;
const TIMED_OUT: u8 = 1;
const SLICED: u8 = 2;

impl Clock {
    fn now() -> u64 {
        u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn arm(&self, deadline: u64, slice: u64) {
        self.stopped.store(RUNNING, Ordering::Relaxed);
        self.deadline.store(deadline, Ordering::Relaxed);
        self.slice.store(slice, Ordering::Relaxed);
    }

    /// Disarms the clock and says why it stopped the run, if it did.
    fn disarm(&self) -> u8 {
        self.deadline.store(UNARMED, Ordering::Relaxed);
        self.slice.store(UNARMED, Ordering::Relaxed);
        self.stopped.load(Ordering::Relaxed)
    }

    /// QuickJS calls this every few thousand instructions; `true` interrupts the script.
    fn expired(&self) -> bool {
        let deadline = self.deadline.load(Ordering::Relaxed);
        let slice = self.slice.load(Ordering::Relaxed);
        if deadline == UNARMED && slice == UNARMED {
            return false;
        }
        let now = Self::now();
        let why = if now >= deadline {
            TIMED_OUT
        } else if now >= slice {
            SLICED
        } else {
            return false;
        };
        self.stopped.store(why, Ordering::Relaxed);
        true
    }
}

/// One QuickJS runtime and context with the program's factory installed.
struct Engine {
    context: Context,
    /// Kept for as long as the context: the context refers into it.
    _runtime: Runtime,
    clock: Arc<Clock>,
    /// What the current run's input became, shared with the traps of its proxies.
    registry: input::Shared,
}

/// Why a run failed, and whether its engine may run again.
struct Failure {
    error: ErrorValue,
    reusable: bool,
}

impl Failure {
    fn new(message: impl Into<String>) -> Failure {
        Failure {
            error: ErrorValue::new(message.into()),
            reusable: true,
        }
    }

    /// Out of memory: after an allocation failed half-way QuickJS's state is best not trusted
    /// further, so the engine is dropped.
    fn out_of_memory(stage: Stage) -> Failure {
        Failure {
            error: ErrorValue::new(format!(
                "javascript run exceeded its memory limit of {} MiB {stage}",
                MEMORY_LIMIT >> 20
            )),
            reusable: false,
        }
    }
}

/// Where in a run a failure happened, for its message.
#[derive(Clone, Copy)]
enum Stage {
    Input,
    Call,
    Output,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Input => "while converting its input (the payload does not fit the heap)",
            Stage::Call => "while running",
            Stage::Output => "while converting its result",
        })
    }
}

impl Engine {
    fn new(language: &str, factory: &Factory) -> Result<Engine, Error> {
        let failed = |message: String| Error::Engine {
            language: language.to_owned(),
            message,
        };
        let runtime = Runtime::new().map_err(|e| failed(e.to_string()))?;
        runtime.set_memory_limit(MEMORY_LIMIT);
        runtime.set_max_stack_size(STACK_LIMIT);
        // The handler is always installed: even a program without a timeout has a slice.
        let clock = Arc::new(Clock {
            deadline: AtomicU64::new(UNARMED),
            slice: AtomicU64::new(UNARMED),
            stopped: AtomicU8::new(RUNNING),
        });
        let handler = Arc::clone(&clock);
        runtime.set_interrupt_handler(Some(Box::new(move || handler.expired())));
        let context = Context::full(&runtime).map_err(|e| failed(e.to_string()))?;
        let registry = input::Shared::default();
        context.with(|ctx| {
            let installed: rquickjs::Result<()> = (|| {
                let function: Function = ctx.eval(factory.source.as_str())?;
                let setup: Function = ctx.eval(SETUP)?;
                let natives = input::natives(&ctx, &registry)?;
                setup.call::<_, ()>((function, natives, factory.reusable))
            })();
            installed.map_err(|e| {
                let message = caught(&ctx, &e).unwrap_or_else(|| e.to_string());
                Error::Syntax {
                    language: language.to_owned(),
                    message,
                }
            })
        })?;
        Ok(Engine {
            context,
            _runtime: runtime,
            clock,
            registry,
        })
    }

    /// Runs the program once, until `deadline` (a timeout error) or `slice` (`None`: run it
    /// again elsewhere); also says whether the engine is fit to run again.
    fn run(
        &self,
        input: &Value,
        deadline: u64,
        slice: u64,
        timeout: Option<Duration>,
    ) -> (Option<Result<Value, ErrorValue>>, bool) {
        self.clock.arm(deadline, slice);
        let result = self.context.with(|ctx| self.invoke(&ctx, input, true));
        let stopped = self.clock.disarm();
        match result {
            Ok(value) => (Some(Ok(value)), true),
            // An interrupted engine may be half-way through anything: it is not reused.
            Err(_) if stopped == SLICED => (None, false),
            Err(_) if stopped == TIMED_OUT => (
                Some(Err(ErrorValue::new(format!(
                    "javascript run exceeded its timeout of {:?}",
                    timeout.unwrap_or_default()
                )))),
                false,
            ),
            Err(failure) => (Some(Err(failure.error)), failure.reusable),
        }
    }
}

impl Engine {
    /// Converts the input (its maps lazily, unless `lazy` is false), calls the module's
    /// function and converts its result.
    fn invoke(&self, ctx: &Ctx<'_>, input: &Value, lazy: bool) -> Result<Value, Failure> {
        let at = |stage: Stage| move |e: rquickjs::Error| thrown(ctx, &e, stage);
        let hidden: Object = ctx.globals().get(HIDDEN).map_err(at(Stage::Input))?;
        let env = input::Env::new(hidden.clone());
        input::begin(&self.registry, lazy);
        let result = call(ctx, &hidden, &env, &self.registry, input);
        // Jobs a run queued but did not wait for run now, not at the start of the next run;
        // they may still read the input, which is forgotten only after them.
        while ctx.execute_pending_job() {}
        let _ = env.end(&self.registry);
        result
    }
}

/// See [`Engine::invoke`].
fn call<'js>(
    ctx: &Ctx<'js>,
    hidden: &Object<'js>,
    env: &input::Env<'js>,
    registry: &input::Shared,
    input: &Value,
) -> Result<Value, Failure> {
    let at = |stage: Stage| move |e: rquickjs::Error| thrown(ctx, &e, stage);
    let argument = input::to_js(ctx, env, registry, input).map_err(at(Stage::Input))?;
    let run: Function = hidden.get(RUN).map_err(at(Stage::Call))?;
    let mut output: JsValue = run.call((argument,)).map_err(at(Stage::Call))?;
    if let Some(promise) = output.as_promise().cloned() {
        while promise.state() == PromiseState::Pending && ctx.execute_pending_job() {}
        output = match promise.result::<JsValue>() {
            Some(result) => result.map_err(at(Stage::Call))?,
            None => {
                return Err(Failure::new(
                    "the promise the function returned never settled",
                ));
            }
        };
    }
    let back = input::Output {
        ctx,
        hidden,
        env,
        shared: registry,
        path: RefCell::default(),
    };
    back.convert(output).map_err(at(Stage::Output))
}

/// Turns an rquickjs error into a failure, taking the pending exception if there is one.
fn thrown(ctx: &Ctx<'_>, error: &rquickjs::Error, stage: Stage) -> Failure {
    let Some(message) = caught(ctx, error) else {
        return match stage {
            // No script code runs while the input converts: only a full heap throws `null`.
            Stage::Input => Failure::out_of_memory(stage),
            // A script may `throw null` itself; the engine is dropped all the same, in case
            // its heap was full.
            Stage::Call | Stage::Output => Failure {
                error: ErrorValue::new(format!(
                    "javascript run threw null (a run that fills its {} MiB heap fails this way too)",
                    MEMORY_LIMIT >> 20
                )),
                reusable: false,
            },
        };
    };
    if message.ends_with("out of memory") {
        return Failure::out_of_memory(stage);
    }
    if message.ends_with("Maximum call stack size exceeded") || message.ends_with("stack overflow")
    {
        return Failure::new(format!(
            "{message} (the javascript stack limit of {} KiB was hit)",
            STACK_LIMIT >> 10
        ));
    }
    Failure::new(message)
}

/// The message of an rquickjs error: the thrown value's, for an exception; `None` when that
/// value is `null`, which is also what QuickJS throws when it cannot allocate an error object.
fn caught(ctx: &Ctx<'_>, error: &rquickjs::Error) -> Option<String> {
    if !error.is_exception() {
        return Some(error.to_string());
    }
    let value = ctx.catch();
    if value.is_null() {
        return None;
    }
    if let Some(object) = value.as_object().filter(|_| value.is_error()) {
        let name = object
            .get::<_, Coerced<String>>("name")
            .map(|c| c.0)
            .unwrap_or_default();
        let message = object
            .get::<_, Coerced<String>>("message")
            .map(|c| c.0)
            .unwrap_or_default();
        Some(match name.as_str() {
            "" | "Error" => message,
            _ if message.is_empty() => name,
            _ => format!("{name}: {message}"),
        })
    } else {
        Some(
            value
                .get::<Coerced<String>>()
                .map_or_else(|_| "uncaught exception".to_owned(), |c| c.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uniflow_value::Map;

    /// What one pooled engine costs in memory, as QuickJS counts it.
    #[test]
    fn an_engine_is_small() {
        let source = factory("javascript", "export default (x) => x").unwrap();
        let engine = Engine::new("javascript", &source).unwrap();
        let used = engine._runtime.memory_usage().malloc_size;
        println!("one engine: {} KiB", used >> 10);
        assert!(used < 1 << 20, "{used} bytes");
    }

    /// Which modules call their factory once per engine: only those whose top level cannot
    /// hold anything a run changes.
    #[test]
    fn a_factory_is_reused_only_when_the_module_is_stateless() {
        let cases = [
            ("export default (x) => x", true),
            ("export default function (x) { return x; }", true),
            (
                "export default async function f(x) { return x > 0 ? f(x - 1) : 0; }",
                true,
            ),
            (
                "const K = 1, S = 'a', T = `t`, N = -2, B = 1n, Z = null, Y = true;\nexport default (x) => K",
                true,
            ),
            (
                "function h(x) { return x; }\nexport default (x) => h(x)",
                true,
            ),
            (
                "export function h(x) { return x; }\nexport const K = 2;\nexport default (x) => h(K)",
                true,
            ),
            (";\nexport default (x) => x;", true),
            ("let n = 0;\nexport default (x) => ++n", false),
            ("var n = 0;\nexport default (x) => n", false),
            ("const seen = [];\nexport default (x) => seen", false),
            ("const K = `${1}`;\nexport default (x) => K", false),
            ("const { a } = { a: 1 };\nexport default (x) => a", false),
            ("export default function f(x) { f.n = 1; return f; }", false),
            ("function h() {}\nexport default (x) => h", false),
            ("function h() {}\nexport default (x) => [1].map(h)", false),
            ("function h() {}\nexport default (x) => (h)()", false),
            ("function h() {}\nexport default (x) => new h()", false),
            (
                "function h(x) { return x; }\nexport { h as default };",
                false,
            ),
            ("class C {}\nexport default (x) => new C()", false),
            ("export default class { }", false),
            ("export default { run: (x) => x }", false),
            ("console.log(1);\nexport default (x) => x", false),
            ("module.exports = (x) => x", false),
            ("export default (x) => x;\nexports.n = 1;", false),
            ("function h() {}\nexport default (x) => eval('h')", false),
            ("function* g() {}\nexport default (x) => g()", false),
            ("export default (x) => arguments.length", false),
            (
                "export default function (x) { return arguments.length; }",
                false,
            ),
            ("export default function* (x) { yield x; }", false),
        ];
        for (code, want) in cases {
            let made = factory("javascript", code).unwrap();
            assert_eq!(made.reusable, want, "{code}");
        }
    }

    /// Runs `code` on `input` once, its maps made into proxies or into plain objects.
    fn run_noting(code: &str, input: &Value, lazy: bool) -> Result<Value, String> {
        let source = factory("javascript", code).unwrap();
        let engine = Engine::new("javascript", &source).unwrap();
        engine
            .context
            .with(|ctx| engine.invoke(&ctx, input, lazy))
            .map_err(|f| f.error.to_string())
    }

    /// Whatever a script does to its input before handing it back, reusing the untouched parts
    /// answers what converting the result back answers.
    #[test]
    fn reusing_the_input_answers_as_converting_it_back() {
        let input = Value::Map(Map::from_iter([
            (Value::from("body"), Value::Map([("n", 1), ("m", 2)].into())),
            (
                Value::from("list"),
                Value::from(vec![Value::from("a"), Value::Int(2), Value::Null]),
            ),
            (Value::from("bytes"), Value::Bytes(vec![1u8, 2].into())),
            (Value::from("float"), Value::Float(2.0)),
            (Value::from("half"), Value::Float(0.5)),
            (Value::from("big"), Value::Int(1 << 60)),
            (Value::from("huge"), Value::Uint(u64::MAX)),
            (
                Value::from("error"),
                Value::Error(ErrorValue::join(vec![
                    ErrorValue::new("a"),
                    ErrorValue::new("b"),
                ])),
            ),
            (
                Value::from("keys"),
                Value::Map([(Value::Int(1), Value::from("one"))].into_iter().collect()),
            ),
            (
                Value::from("ordered"),
                Value::Map([("10", 1), ("9", 2)].into()),
            ),
            (Value::from("s"), Value::from("text")),
            (Value::from("x"), Value::Map([("k", "x")].into())),
            (Value::from("y"), Value::Map([("k", "y")].into())),
        ]));
        let plain = Value::Map(Map::from_iter([
            (Value::from("body"), Value::Map([("n", 1), ("m", 2)].into())),
            (
                Value::from("list"),
                Value::from(vec![Value::from("a"), Value::Int(2)]),
            ),
            (Value::from("bytes"), Value::Bytes(vec![1u8, 2].into())),
            (Value::from("s"), Value::from("text")),
        ]));
        let scripts = [
            "(a) => a",
            "(a) => a.body",
            "(a) => [a.body, a.body, a.list]",
            "(a) => ({ status: 201, body: a.body })",
            "(a) => ({ ...a })",
            "(a) => { a.body.n = 5; return a; }",
            "(a) => { a.added = 1; return a; }",
            "(a) => { delete a.s; return a; }",
            "(a) => { a.s = 'te' + 'xt'; return a; }",
            "(a) => { a.f = () => 1; a.u = undefined; return a; }",
            "(a) => { a.list.push(1); return a; }",
            "(a) => { a.list.length = 1; return a; }",
            "(a) => { a.list[0] = 'z'; return a; }",
            "(a) => { a.list[1] = () => 1; return a; }",
            "(a) => { a.bytes[0] = 9; return a; }",
            "(a) => { const t = a.x; a.x = a.y; a.y = t; return a; }",
            "(a) => { Object.defineProperty(a, 's', { enumerable: false }); return a; }",
            "(a) => { Object.defineProperty(a, 'toJSON', { value: () => 'j' }); return a; }",
            "(a) => { Object.defineProperty(a.body, 'toJSON', { value: () => 'j' }); return a; }",
            "(a) => { Object.setPrototypeOf(a.body, { toJSON() { return 7; } }); return a; }",
            "(a) => { Object.defineProperty(a, 's', { get() { return 'g'; }, enumerable: true }); return a; }",
            "(a) => { Object.freeze(a); return a; }",
            "(a) => { a.body = a.x; return a; }",
            "(a) => { a.x.self = a; return a; }",
        ];
        for code in scripts {
            let code = format!("export default {code};");
            for input in [&input, &plain] {
                let noted = run_noting(&code, input, true);
                let converted = run_noting(&code, input, false);
                assert_eq!(noted, converted, "{code} on {input:?}");
            }
        }
        // Handed back untouched, the plain input is the very payload, not a copy.
        let noted = run_noting("export default (a) => a;", &plain, true).unwrap();
        let (Value::Map(noted), Value::Map(plain)) = (&noted, &plain) else {
            unreachable!()
        };
        assert!(std::ptr::eq(noted.entries(), plain.entries()));
    }

    /// A payload with what a request carries and the edges: keys JavaScript orders first, a
    /// `__proto__` key, keys with NUL, nested maps and lists, bytes, an error, numbers that do
    /// not come back as they were.
    fn observed_input() -> Value {
        let json = r#"{
            "s": "text", "n": 7, "half": 0.5, "no": null, "t": true,
            "body": {"name": "uniflow", "score": 3, "tags": ["a", "b"], "deep": {"er": {"est": 1}}},
            "header": {"Accept": ["*/*"], "Content-Type": ["application/json"]},
            "list": ["a", 2, null, {"k": 1}, [1, [2]]],
            "ordered": {"b": 1, "10": 2, "9": 3, "a": 4, "4294967295": 5, "01": 6},
            "weird": {"__proto__": 1, "": 2, "a\u0000b": 3, "constructor": 4},
            "empty": {}, "none": []
        }"#;
        let Value::Map(map) = serde_json::from_str::<Value>(json).unwrap() else {
            unreachable!()
        };
        let mut entries = map.entries().to_vec();
        entries.extend([
            (Value::from("bytes"), Value::Bytes(vec![1u8, 2, 255].into())),
            (Value::from("error"), Value::Error(ErrorValue::new("boom"))),
            (Value::from("float"), Value::Float(2.0)),
            (Value::from("big"), Value::Int(1 << 60)),
            (Value::from("huge"), Value::Uint(u64::MAX)),
            (
                Value::from("keys"),
                Value::Map([(Value::Int(1), Value::from("one"))].into_iter().collect()),
            ),
        ]);
        Value::Map(Map::from_iter(entries))
    }

    /// What a script can observe of its input is the same whether its maps are proxies or
    /// plain objects: reads, `in`, key order, enumeration, arrays, `JSON.stringify`, bytes,
    /// errors, identity of repeated reads, changes (which succeed, as on the plain objects a
    /// script has always been given) and what a failed change throws.
    #[test]
    fn a_lazy_input_is_observed_as_a_plain_one() {
        let scripts = [
            // Reads and `in`.
            "(a) => [a.s, a.n, a.half, a.no, a.t, a.missing, a.body.name, a.body.deep.er.est]",
            "(a) => ['s' in a, 'missing' in a, 'toString' in a, 'hasOwnProperty' in a, a.hasOwnProperty('s'), a.hasOwnProperty('toString')]",
            "(a) => [typeof a, typeof a.body, String(a), a + '', Object.prototype.toString.call(a), Object.prototype.toString.call(a.list)]",
            "(a) => [a.weird.__proto__, a.weird[''], a.weird['a\\0b'], a.weird.constructor, Object.getPrototypeOf(a.weird) === Object.prototype]",
            "(a) => { try { return a.missing.field; } catch (e) { return String(e); } }",
            // Key order and enumeration.
            "(a) => [Object.keys(a), Object.keys(a.ordered), Object.keys(a.weird), Object.keys(a.empty), Object.keys(a.keys)]",
            "(a) => [Object.getOwnPropertyNames(a.ordered), Reflect.ownKeys(a.weird), Object.getOwnPropertySymbols(a)]",
            "(a) => [Object.entries(a.body), Object.values(a.ordered)]",
            "(a) => { const k = []; for (const x in a.ordered) k.push(x); for (const x in a) k.push(x); return k; }",
            "(a) => ({ ...a.body, extra: 1, ...a.ordered })",
            "(a) => Object.assign({}, a.header, { more: true })",
            // Lists.
            "(a) => [Array.isArray(a.list), Array.isArray(a.body), a.list.length, a.list.map((x) => typeof x), [...a.list].length]",
            "(a) => [a.list.includes('a'), a.list.indexOf(2), a.list.slice(3), a.list[3].k, a.list[4][1][0], a.none.length]",
            "(a) => { const r = []; for (const x of a.body.tags) r.push(x + '!'); return r; }",
            "(a) => Object.entries(a.header).map(([k, v]) => k + '=' + v.join(','))",
            // JSON.
            "(a) => JSON.stringify(a)",
            "(a) => JSON.stringify(a.body, null, 2)",
            "(a) => JSON.stringify(a, ['s', 'body', 'name'])",
            "(a) => JSON.parse(JSON.stringify(a.ordered))",
            // Bytes and errors.
            "(a) => [a.bytes instanceof Uint8Array, a.bytes.length, Array.from(a.bytes), a.bytes[2]]",
            "(a) => [a.error instanceof Error, a.error.error(), a.error.message, String(a.error)]",
            "(a) => [a.float, a.big, a.huge, a.keys[1]]",
            // Identity.
            "(a) => [a.body === a.body, a.header === a.header, a.list === a.list, a.bytes === a.bytes, a.error === a.error, a.list[3] === a.list[3]]",
            "(a) => { const b = a.body; a.body.x = 1; return [b === a.body, b.x]; }",
            // Descriptors, extensibility, prototypes.
            "(a) => [Object.getOwnPropertyDescriptor(a, 's'), Object.getOwnPropertyDescriptor(a, 'missing'), Object.getOwnPropertyDescriptors(a.body).name]",
            "(a) => [Object.isFrozen(a), Object.isSealed(a), Object.isExtensible(a), Object.getPrototypeOf(a.body) === Object.prototype]",
            "(a) => [a.propertyIsEnumerable('s'), Object.hasOwn(a, 'body'), Object.hasOwn(a, 'nope')]",
            // Changes succeed, on the script's own copy.
            "(a) => { a.s = 'changed'; a.added = [1]; return a; }",
            "(a) => { a.body.score += 1; a.body.tags.push('c'); return [a.body, a]; }",
            "(a) => { delete a.s; delete a.body.deep; return [Object.keys(a), a.body]; }",
            "(a) => { Object.defineProperty(a.body, 'hidden', { value: 1 }); return [a.body.hidden, Object.keys(a.body), Object.getOwnPropertyDescriptor(a.body, 'hidden')]; }",
            "(a) => { Object.setPrototypeOf(a.body, null); return [Object.getPrototypeOf(a.body), 'toString' in a.body, Object.keys(a.body)]; }",
            "(a) => { Object.setPrototypeOf(a.body, { toJSON() { return 'j'; } }); return a; }",
            "(a) => { const o = Object.create(a); o.x = 1; return [o.x, o.s, Object.keys(a).length, Object.keys(o)]; }",
            "(a) => { a.weird.__proto__ = 5; return [a.weird.__proto__, Object.keys(a.weird)]; }",
            // Failed changes throw what they throw on a plain object.
            "(a) => { Object.freeze(a); try { a.s = 1; } catch (e) { return [String(e), Object.isFrozen(a), a.s]; } }",
            "(a) => { Object.freeze(a.body); try { delete a.body.name; } catch (e) { return [String(e), a.body.name]; } }",
            "(a) => { Object.preventExtensions(a.body); try { a.body.fresh = 1; } catch (e) { return [String(e), Object.isExtensible(a.body)]; } }",
            "(a) => { Object.seal(a); try { Object.defineProperty(a, 's', { get() { return 1; } }); } catch (e) { return [String(e), Object.isSealed(a)]; } }",
        ];
        let inputs = [
            observed_input(),
            Value::Map([("body", Value::Map([("k", 1)].into()))].into()),
        ];
        for code in scripts {
            let code = format!("export default {code};");
            for input in &inputs {
                let lazy = run_noting(&code, input, true);
                let eager = run_noting(&code, input, false);
                assert_eq!(lazy, eager, "{code} on {input:?}");
            }
        }
        // A list of maps, as `reduce` and `split` hand over.
        let list = Value::List((0..3).map(|i| Value::Map([("k", i)].into())).collect());
        for code in [
            "(a) => a.map((x) => x.k)",
            "(a) => a",
            "(a) => a.filter((x) => x.k > 0)",
            "(a) => { a[0].k = 9; return a; }",
            "(a) => JSON.stringify(a)",
        ] {
            let code = format!("export default {code};");
            assert_eq!(
                run_noting(&code, &list, true),
                run_noting(&code, &list, false),
                "{code}"
            );
        }
    }

    /// An input handed back, whole or in part, untouched answers with the payload it came
    /// from, not a copy, and a copy of it with the parts that were not touched shared.
    #[test]
    fn an_untouched_input_is_handed_back_as_it_came() {
        let input = observed_input();
        let Value::Map(map) = &input else {
            unreachable!()
        };
        let shares = |a: &Value, b: &Value| match (a, b) {
            (Value::Map(a), Value::Map(b)) => std::ptr::eq(a.entries(), b.entries()),
            (Value::List(a), Value::List(b)) => std::ptr::eq(&a[..], &b[..]),
            _ => false,
        };
        let body = map.get("body").unwrap();
        let header = map.get("header").unwrap();
        let out = run_noting("export default (a) => a.body;", &input, true).unwrap();
        assert!(shares(&out, body), "{out:?}");
        let out = run_noting(
            "export default (a) => [a.header, a.body.tags, a.body.deep.er];",
            &input,
            true,
        )
        .unwrap();
        let Value::List(out) = out else {
            unreachable!()
        };
        assert!(shares(&out[0], header));
        let body = body.as_map().unwrap();
        assert!(shares(&out[1], body.get("tags").unwrap()));
        // Read through, then handed back: still the payload.
        let out = run_noting(
            "export default (a) => { JSON.stringify(a.header); Object.keys(a.body); return [a.header, a.body.name]; };",
            &input,
            true,
        )
        .unwrap();
        assert!(shares(&out.as_list().unwrap()[0], header));
        // A changed map is a new one, with the maps inside it that did not change shared.
        let out = run_noting(
            "export default (a) => { a.status = 201; return a; };",
            &input,
            true,
        )
        .unwrap();
        let out = out.as_map().unwrap();
        assert_eq!(out.get("status"), Some(&Value::Int(201)));
        assert!(shares(out.get("header").unwrap(), header));
    }
}
