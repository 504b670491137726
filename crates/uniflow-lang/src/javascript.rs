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
//! **Values.** The input arrives as plain JavaScript values: maps as objects, lists as arrays,
//! bytes as a `Uint8Array`, and an error payload as an `Error` whose `error()` method returns
//! its message (upstream's `e.error()`). The result comes back the way `JSON.stringify` sees
//! it: `undefined`, functions and symbols become `null` (and are left out of objects), objects
//! with `toJSON` (a `Date`) are converted through it, a number with no fraction is an integer,
//! a `Uint8Array` or `ArrayBuffer` is bytes, and a returned `Error` is an error payload. A
//! function that returns a promise (an `async` one) has it settled before the result converts.
//! A thrown exception fails the run with its message (prefixed with its name, unless it is a
//! plain `Error`, so `throw new Error("unsupported type")` can be matched exactly).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use oxc::allocator::Allocator;
use oxc::ast::ast::{ExportDefaultDeclarationKind, Statement};
use oxc::diagnostics::OxcDiagnostic;
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::{GetSpan, SourceType, Span};
use rquickjs::atom::PredefinedAtom;
use rquickjs::function::This;
use rquickjs::object::Property;
use rquickjs::promise::PromiseState;
use rquickjs::{
    Array, Coerced, Context, Ctx, Filter, Function, Object, Runtime, Type, TypedArray,
    Value as JsValue,
};
use uniflow_value::{ErrorValue, List, Map, Value};

use crate::{Error, Language, Options, Program};

/// The heap one engine may use, built-ins included (about 120 KiB of it).
const MEMORY_LIMIT: usize = 64 << 20;

/// The native stack one run may use below the point where it was called. A JavaScript call
/// nests over a kilobyte of native frames in a release build (several times that unoptimised),
/// so this allows a recursion about 400 deep (measured; about 160 in a debug build). It must stay well under what is left of the
/// smallest thread stack a run may start on (tokio's workers have 2 MiB, and a snippet may sit
/// at the end of a long chain of nodes), or a deep recursion would hit the guard page, and
/// abort the process, before QuickJS notices.
const STACK_LIMIT: usize = 512 << 10;

/// Deeper values than this are refused rather than converted: a conversion recurses once per
/// level, and a cyclic object must not overflow the stack.
const MAX_NESTING: usize = 256;

/// The global (frozen, not enumerable) under which an engine keeps its helpers.
const HIDDEN: &str = "__uniflow";

/// Installs the helpers, then locks the globals down. Called once per engine with the factory.
const SETUP: &str = r#"(function (factory) {
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
  Object.defineProperty(globalThis, "__uniflow", {
    value: Object.freeze({
      run: (input) => exported()(input),
      error: (message) => new PayloadError(message),
      latin1,
    }),
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
    let source = factory(language, code)?;
    // Building the first engine now surfaces anything QuickJS rejects at load, not on the
    // first packet, and leaves that engine warm for it.
    let engine = Engine::new(language, &source)?;
    let max_idle = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(Arc::new(JsProgram {
        language,
        source,
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

/// Parses a module and rewrites it into the source of a factory function (see the module
/// docs). The rewrite only replaces `export` keywords, so every line keeps its number.
fn factory(language: &str, code: &str) -> Result<String, Error> {
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
    let semantic = SemanticBuilder::new()
        .with_check_syntax_error(true)
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
    Ok(source)
}

/// A compiled module and its pool of engines.
struct JsProgram {
    language: &'static str,
    source: String,
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
            None => match Engine::new(self.language, &self.source) {
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
    fn new(language: &str, source: &str) -> Result<Engine, Error> {
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
        context.with(|ctx| {
            let installed: rquickjs::Result<()> = (|| {
                let factory: Function = ctx.eval(source)?;
                let setup: Function = ctx.eval(SETUP)?;
                setup.call::<_, ()>((factory,))
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
        let result = self.context.with(|ctx| {
            let result = invoke(&ctx, input);
            // Jobs a run queued but did not wait for run now, not at the start of the next run.
            while ctx.execute_pending_job() {}
            result
        });
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

/// Converts the input, calls the module's function and converts its result.
fn invoke(ctx: &Ctx<'_>, input: &Value) -> Result<Value, Failure> {
    let at = |stage: Stage| move |e: rquickjs::Error| thrown(ctx, &e, stage);
    let hidden: Object = ctx.globals().get(HIDDEN).map_err(at(Stage::Input))?;
    let argument = to_js(ctx, &hidden, input, 0).map_err(at(Stage::Input))?;
    let run: Function = hidden.get("run").map_err(at(Stage::Call))?;
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
    from_js(ctx, &hidden, output, 0).map_err(at(Stage::Output))
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

fn too_deep<'js>(ctx: &Ctx<'js>) -> rquickjs::Error {
    rquickjs::Exception::throw_range(
        ctx,
        &format!("value nests deeper than {MAX_NESTING} levels"),
    )
}

/// Converts a payload into a JavaScript value.
fn to_js<'js>(
    ctx: &Ctx<'js>,
    hidden: &Object<'js>,
    value: &Value,
    depth: usize,
) -> rquickjs::Result<JsValue<'js>> {
    if depth > MAX_NESTING {
        return Err(too_deep(ctx));
    }
    Ok(match value {
        Value::Null => JsValue::new_null(ctx.clone()),
        Value::Bool(b) => JsValue::new_bool(ctx.clone(), *b),
        Value::Int(i) => match i32::try_from(*i) {
            Ok(i) => JsValue::new_int(ctx.clone(), i),
            Err(_) => JsValue::new_float(ctx.clone(), *i as f64),
        },
        Value::Uint(u) => JsValue::new_float(ctx.clone(), *u as f64),
        Value::Float(f) => JsValue::new_float(ctx.clone(), *f),
        Value::String(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        Value::Bytes(b) => TypedArray::<u8>::new_copy(ctx.clone(), &b[..])?.into_value(),
        Value::List(items) => {
            let array = Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                array.set(i, to_js(ctx, hidden, item, depth + 1)?)?;
            }
            array.into_value()
        }
        Value::Map(map) => {
            let object = Object::new(ctx.clone())?;
            for (key, item) in map.iter() {
                // Defined, not assigned: assigning `__proto__` (a JSON body may carry that
                // key) would set the object's prototype instead of adding an entry.
                let item = Property::from(to_js(ctx, hidden, item, depth + 1)?)
                    .writable()
                    .enumerable()
                    .configurable();
                match key {
                    Value::String(s) => object.prop(&**s, item)?,
                    other => object.prop(key_text(other), item)?,
                }
            }
            object.into_value()
        }
        Value::Error(e) => {
            let make: Function = hidden.get("error")?;
            make.call((&**e.message(),))?
        }
    })
}

/// A non-string map key as a property name: JavaScript keys are strings.
fn key_text(key: &Value) -> String {
    match key {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Uint(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::String(s) => s.to_string(),
        other => format!("{other:?}"),
    }
}

/// A JavaScript number as a payload: integral numbers are integers, as JavaScript cannot tell
/// `2` from `2.0` and upstream's goja exported them as integers too.
fn number(f: f64) -> Value {
    const SAFE: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.fract() == 0.0 && f.abs() < SAFE && !(f == 0.0 && f.is_sign_negative()) {
        Value::Int(f as i64)
    } else {
        Value::Float(f)
    }
}

/// Whether `JSON.stringify` would leave a property with this value out.
fn skipped(value: &JsValue<'_>) -> bool {
    matches!(
        value.type_of(),
        Type::Undefined | Type::Uninitialized | Type::Function | Type::Constructor | Type::Symbol
    )
}

/// Converts a JavaScript value into a payload.
fn from_js<'js>(
    ctx: &Ctx<'js>,
    hidden: &Object<'js>,
    value: JsValue<'js>,
    depth: usize,
) -> rquickjs::Result<Value> {
    if depth > MAX_NESTING {
        return Err(too_deep(ctx));
    }
    Ok(match value.type_of() {
        Type::Bool => Value::Bool(value.as_bool().unwrap_or_default()),
        Type::Int => Value::Int(i64::from(value.as_int().unwrap_or_default())),
        Type::Float => number(value.as_float().unwrap_or_default()),
        Type::String => Value::from(value.get::<String>()?),
        Type::BigInt => {
            let big = value.get::<rquickjs::BigInt>()?;
            Value::Int(big.to_i64()?)
        }
        Type::Array => {
            let array = value.into_array().expect("the value is an array");
            let items = array
                .iter::<JsValue>()
                .map(|item| {
                    let item = item?;
                    if skipped(&item) {
                        Ok(Value::Null)
                    } else {
                        from_js(ctx, hidden, item, depth + 1)
                    }
                })
                .collect::<rquickjs::Result<Vec<_>>>()?;
            Value::List(List::from(items))
        }
        Type::Exception => {
            let message = value
                .as_object()
                .and_then(|o| o.get::<_, Coerced<String>>("message").ok())
                .map(|c| c.0)
                .unwrap_or_default();
            Value::Error(ErrorValue::new(message))
        }
        Type::Object | Type::Proxy | Type::Promise => {
            let object = value.into_object().expect("the value is an object");
            from_object(ctx, hidden, object, depth)?
        }
        Type::Null
        | Type::Undefined
        | Type::Uninitialized
        | Type::Function
        | Type::Constructor
        | Type::Symbol
        | Type::Module
        | Type::Unknown => Value::Null,
    })
}

fn from_object<'js>(
    ctx: &Ctx<'js>,
    hidden: &Object<'js>,
    object: Object<'js>,
    depth: usize,
) -> rquickjs::Result<Value> {
    if object.is_typed_array::<u8>() || object.is_array_buffer() {
        let latin1: Function = hidden.get("latin1")?;
        let text: String = latin1.call((object,))?;
        // Every character is below 256: it was built from bytes.
        return Ok(Value::Bytes(text.chars().map(|c| c as u8).collect()));
    }
    let to_json: JsValue = object.get(PredefinedAtom::ToJSON)?;
    if let Some(to_json) = to_json.as_function() {
        let json: JsValue = to_json.call((This(object), ""))?;
        return from_js(ctx, hidden, json, depth + 1);
    }
    let mut entries = Vec::new();
    // Keys are read as JavaScript strings, whose conversion keeps their length: read as Rust
    // strings they go through a C string and a key with a NUL in it would be cut short.
    for entry in object.own_props::<rquickjs::String, JsValue>(Filter::new().string().enum_only()) {
        let (key, item) = entry?;
        if !skipped(&item) {
            entries.push((
                Value::from(key.to_string()?),
                from_js(ctx, hidden, item, depth + 1)?,
            ));
        }
    }
    Ok(Value::Map(Map::from_iter(entries)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one pooled engine costs in memory, as QuickJS counts it.
    #[test]
    fn an_engine_is_small() {
        let source = factory("javascript", "export default (x) => x").unwrap();
        let engine = Engine::new("javascript", &source).unwrap();
        let used = engine._runtime.memory_usage().malloc_size;
        println!("one engine: {} KiB", used >> 10);
        assert!(used < 1 << 20, "{used} bytes");
    }
}
