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
//!
//! **Handing the input back.** Converting a request payload back took more than half of a run
//! of `(a) => a`. So a run notes which objects its input became and what it put in each
//! ([`Made`]); an object of the result that is one of those, with every entry still the very
//! value put there, answers with the payload it came from instead of a copy. The comparison
//! reads only what converting would read, in the same order, so a script cannot tell. A
//! program whose results reuse nothing stops noting, but for one run in [`PROBE_EVERY`].

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
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
    Array, Atom, Coerced, Context, Ctx, Filter, Function, Object, Runtime, Type, TypedArray,
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
        reuse: Reuse(AtomicU32::new(0)),
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
    reuse: Reuse,
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
        let (outcome, reusable) = engine.run(input, deadline, slice, self.timeout, &self.reuse);
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
        reuse: &Reuse,
    ) -> (Option<Result<Value, ErrorValue>>, bool) {
        self.clock.arm(deadline, slice);
        let result = self.context.with(|ctx| {
            let result = invoke(&ctx, input, reuse);
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
fn invoke(ctx: &Ctx<'_>, input: &Value, reuse: &Reuse) -> Result<Value, Failure> {
    let at = |stage: Stage| move |e: rquickjs::Error| thrown(ctx, &e, stage);
    let hidden: Object = ctx.globals().get(HIDDEN).map_err(at(Stage::Input))?;
    let mut made = Made::new(reuse.record());
    let argument = to_js(ctx, &hidden, &mut made, input, 0).map_err(at(Stage::Input))?;
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
    let output = from_js(ctx, &hidden, &made, output, 0)
        .map(Back::into_value)
        .map_err(at(Stage::Output));
    reuse.ran(made.record, made.reused.get());
    output
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

/// What a run's input became: for each object, array and byte array made from a payload, that
/// payload and what each of its entries was given, so that one the result holds untouched is
/// recognised by identity, entry by entry, and answered with that payload rather than
/// converted back. They are held until the result has converted, which the function's
/// parameter mostly does anyway.
struct Made<'js, 'v> {
    /// Whether this run notes anything: see [`Reuse`].
    record: bool,
    origins: HashMap<JsValue<'js>, Origin<'js, 'v>, BuildHasherDefault<IdentityHasher>>,
    /// Whether the result reused a part of the input.
    reused: Cell<bool>,
}

impl<'js, 'v> Made<'js, 'v> {
    fn new(record: bool) -> Made<'js, 'v> {
        Made {
            record,
            origins: HashMap::default(),
            reused: Cell::new(false),
        }
    }

    fn origin(&self, value: &JsValue<'js>) -> Option<&Origin<'js, 'v>> {
        if self.origins.is_empty() {
            return None;
        }
        self.origins.get(value)
    }

    /// `value`, noting that a part of the input was reused.
    fn same(&self, value: &'v Value) -> Back<'v> {
        self.reused.set(true);
        Back::Same(value)
    }
}

/// Whether a program's runs note what their input became ([`Made`]). Noting costs about a
/// fifth of converting the input, and pays only when results hand parts of it back, as
/// `(a) => a` or `(a) => ({ ...a, status: 201 })` do; a program whose results reuse nothing
/// notes only one run in [`PROBE_EVERY`], to find out whether that has changed.
struct Reuse(AtomicU32);

/// See [`Reuse`].
const PROBE_EVERY: u32 = 32;

impl Reuse {
    fn record(&self) -> bool {
        self.0.load(Ordering::Relaxed).is_multiple_of(PROBE_EVERY)
    }

    fn ran(&self, recorded: bool, reused: bool) {
        if recorded {
            self.0.store(u32::from(!reused), Ordering::Relaxed);
        } else {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The payload an object, array or byte array was made from, and its entries in the order they
/// were defined: an entry's key (for a map) and value, or `None` for one that does not convert
/// back to the entry it came from (an error, a number that comes back as another kind, a key
/// that is not a string).
struct Origin<'js, 'v> {
    value: &'v Value,
    entries: Vec<Option<(Option<Atom<'js>>, JsValue<'js>)>>,
}

/// Hashes a JavaScript value's tag and bits (all [`JsValue`]'s `Hash` writes): an object's
/// identity is its address, so a multiply-and-rotate mix spreads it well enough, at a tenth of
/// SipHash's cost.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_i32(&mut self, i: i32) {
        self.write_u64(i as u64);
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Converts a payload into a JavaScript value, noting in `made` what each object came from.
fn to_js<'js, 'v>(
    ctx: &Ctx<'js>,
    hidden: &Object<'js>,
    made: &mut Made<'js, 'v>,
    value: &'v Value,
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
        Value::Bytes(b) => {
            let bytes = TypedArray::<u8>::new_copy(ctx.clone(), &b[..])?.into_value();
            if made.record {
                let origin = Origin {
                    value,
                    entries: Vec::new(),
                };
                made.origins.insert(bytes.clone(), origin);
            }
            bytes
        }
        Value::List(items) => {
            let array = Array::new(ctx.clone())?;
            let mut entries = Vec::with_capacity(if made.record { items.len() } else { 0 });
            for (i, item) in items.iter().enumerate() {
                let js = to_js(ctx, hidden, made, item, depth + 1)?;
                if made.record {
                    entries.push(comes_back(item).then(|| (None, js.clone())));
                }
                array.set(i, js)?;
            }
            let array = array.into_value();
            if made.record {
                made.origins
                    .insert(array.clone(), Origin { value, entries });
            }
            array
        }
        Value::Map(map) => {
            let object = Object::new(ctx.clone())?;
            let mut entries = Vec::with_capacity(if made.record { map.len() } else { 0 });
            for (key, item) in map.iter() {
                let js = to_js(ctx, hidden, made, item, depth + 1)?;
                let (atom, string_key) = match key {
                    Value::String(s) => (Atom::from_str(ctx.clone(), s)?, true),
                    other => (Atom::from_str(ctx.clone(), &key_text(other))?, false),
                };
                if made.record {
                    let entry = string_key && comes_back(item);
                    entries.push(entry.then(|| (Some(atom.clone()), js.clone())));
                }
                // Defined, not assigned: assigning `__proto__` (a JSON body may carry that
                // key) would set the object's prototype instead of adding an entry.
                let item = Property::from(js).writable().enumerable().configurable();
                object.prop(atom, item)?;
            }
            let object = object.into_value();
            if made.record {
                made.origins
                    .insert(object.clone(), Origin { value, entries });
            }
            object
        }
        Value::Error(e) => {
            let make: Function = hidden.get("error")?;
            make.call((&**e.message(),))?
        }
    })
}

/// Whether [`from_js`] makes of what [`to_js`] made of `value` the same payload again. Numbers
/// come back as integers when they are integral and within 2^53 (a NaN may not keep its bits),
/// and an error keeps only its message.
fn comes_back(value: &Value) -> bool {
    match value {
        Value::Int(i) => i.unsigned_abs() < 1 << 53,
        Value::Uint(_) | Value::Error(_) => false,
        Value::Float(f) => !f.is_nan() && number(*f) == Value::Float(*f),
        Value::Null
        | Value::Bool(_)
        | Value::String(_)
        | Value::Bytes(_)
        | Value::List(_)
        | Value::Map(_) => true,
    }
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

/// A result converted back: the payload an untouched part of the input came from, or a new one.
enum Back<'v> {
    Same(&'v Value),
    New(Value),
}

impl Back<'_> {
    fn into_value(self) -> Value {
        match self {
            Back::Same(v) => v.clone(),
            Back::New(v) => v,
        }
    }
}

/// Converts a JavaScript value into a payload. An object, array or byte array the input became
/// (see [`Made`]) is compared, entry by entry, with what it was made with while it converts;
/// when nothing differs the payload it came from is the answer, and nothing is built: a script
/// that hands back its input, or a part of it, untouched does not pay for converting it back.
fn from_js<'js, 'v>(
    ctx: &Ctx<'js>,
    hidden: &Object<'js>,
    made: &Made<'js, 'v>,
    value: JsValue<'js>,
    depth: usize,
) -> rquickjs::Result<Back<'v>> {
    if depth > MAX_NESTING {
        return Err(too_deep(ctx));
    }
    Ok(Back::New(match value.type_of() {
        Type::Bool => Value::Bool(value.as_bool().unwrap_or_default()),
        Type::Int => Value::Int(i64::from(value.as_int().unwrap_or_default())),
        Type::Float => number(value.as_float().unwrap_or_default()),
        Type::String => Value::from(value.get::<String>()?),
        Type::BigInt => {
            let big = value.get::<rquickjs::BigInt>()?;
            Value::Int(big.to_i64()?)
        }
        Type::Array => {
            let origin = made.origin(&value);
            let array = value.into_array().expect("the value is an array");
            return from_array(ctx, hidden, made, &array, origin, depth);
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
            let origin = made.origin(&value);
            let object = value.into_object().expect("the value is an object");
            return from_object(ctx, hidden, made, object, origin, depth);
        }
        Type::Null
        | Type::Undefined
        | Type::Uninitialized
        | Type::Function
        | Type::Constructor
        | Type::Symbol
        | Type::Module
        | Type::Unknown => Value::Null,
    }))
}

/// What `found` (a key, for an object's entry, and a value) converts to when it is what `entry`
/// put there: `expected`, the payload the entry came from, for the very same value, unless it
/// is an object of the input whose own entries changed. `None` when it is not, and it converts
/// as any value does.
fn untouched<'js, 'v>(
    ctx: &Ctx<'js>,
    hidden: &Object<'js>,
    made: &Made<'js, 'v>,
    entry: Option<&(Option<Atom<'js>>, JsValue<'js>)>,
    found: (Option<&Atom<'js>>, &JsValue<'js>),
    expected: &'v Value,
    depth: usize,
) -> rquickjs::Result<Option<Back<'v>>> {
    let (key, item) = found;
    let Some((put_key, put)) = entry else {
        return Ok(None);
    };
    if put != item || put_key.as_ref() != key {
        return Ok(None);
    }
    if !item.is_object() {
        return Ok(Some(made.same(expected)));
    }
    // The same object: it may still have been changed inside.
    Ok(Some(
        match from_js(ctx, hidden, made, item.clone(), depth + 1)? {
            Back::Same(v) if std::ptr::eq(v, expected) => Back::Same(v),
            other => Back::New(other.into_value()),
        },
    ))
}

/// An array; one made from a list is compared with it item by item.
fn from_array<'js, 'v>(
    ctx: &Ctx<'js>,
    hidden: &Object<'js>,
    made: &Made<'js, 'v>,
    array: &Array<'js>,
    origin: Option<&Origin<'js, 'v>>,
    depth: usize,
) -> rquickjs::Result<Back<'v>> {
    let (expected, put) = match origin.map(|o| (o.value, &o.entries)) {
        Some((Value::List(l), put)) => (&l[..], &put[..]),
        _ => (&[][..], &[][..]),
    };
    // Whether every item so far is untouched.
    let mut same = origin.is_some_and(|o| o.value.as_list().is_some());
    let mut items = Vec::new();
    let mut count = 0;
    for item in array.iter::<JsValue>() {
        let item = item?;
        count += 1;
        let back = match (same, expected.get(count - 1)) {
            (true, Some(e)) => untouched(
                ctx,
                hidden,
                made,
                put[count - 1].as_ref(),
                (None, &item),
                e,
                depth,
            )?,
            _ => None,
        };
        let back = match back {
            Some(Back::Same(_)) => continue,
            Some(changed) => changed,
            None if skipped(&item) => Back::New(Value::Null),
            None => from_js(ctx, hidden, made, item, depth + 1)?,
        };
        if same {
            same = false;
            items.extend_from_slice(&expected[..count - 1]);
        }
        items.push(back.into_value());
    }
    if same {
        if count == expected.len() {
            return Ok(made.same(origin.expect("only an origin can match").value));
        }
        items.extend_from_slice(&expected[..count]);
    }
    Ok(Back::New(Value::List(List::from(items))))
}

/// An object; one made from a map is compared with it entry by entry.
fn from_object<'js, 'v>(
    ctx: &Ctx<'js>,
    hidden: &Object<'js>,
    made: &Made<'js, 'v>,
    object: Object<'js>,
    origin: Option<&Origin<'js, 'v>>,
    depth: usize,
) -> rquickjs::Result<Back<'v>> {
    // What an object is made as (a plain object, a byte array) never changes, so only other
    // objects are asked whether they hold bytes, which costs a thrown and caught exception
    // when they do not.
    let from_map = origin.and_then(|o| o.value.as_map().map(|m| (o.value, m, &o.entries)));
    if from_map.is_none() && (object.is_typed_array::<u8>() || object.is_array_buffer()) {
        let latin1: Function = hidden.get("latin1")?;
        let text: String = latin1.call((object,))?;
        // Every character is below 256: it was built from bytes.
        let bytes = Value::Bytes(text.chars().map(|c| c as u8).collect());
        return Ok(match origin {
            Some(o) if *o.value == bytes => made.same(o.value),
            _ => Back::New(bytes),
        });
    }
    let to_json: JsValue = object.get(PredefinedAtom::ToJSON)?;
    if let Some(to_json) = to_json.as_function() {
        let json: JsValue = to_json.call((This(object), ""))?;
        return from_js(ctx, hidden, made, json, depth + 1);
    }
    let (expected, put) = match from_map {
        Some((_, map, put)) => (map.entries(), &put[..]),
        None => (&[][..], &[][..]),
    };
    // Whether every entry so far is untouched.
    let mut same = from_map.is_some();
    let mut matched = 0;
    let mut entries = Vec::new();
    for entry in object.own_props::<Atom, JsValue>(Filter::new().string().enum_only()) {
        let (key, item) = entry?;
        let back = match (same, expected.get(matched)) {
            (true, Some((_, e))) => untouched(
                ctx,
                hidden,
                made,
                put[matched].as_ref(),
                (Some(&key), &item),
                e,
                depth,
            )?,
            _ => None,
        };
        let back = match back {
            Some(Back::Same(_)) => {
                matched += 1;
                continue;
            }
            Some(changed) => changed,
            None if skipped(&item) => continue,
            None => from_js(ctx, hidden, made, item, depth + 1)?,
        };
        if same {
            same = false;
            entries.extend_from_slice(&expected[..matched]);
        }
        // Keys are read as JavaScript strings, whose conversion keeps their length: read as
        // Rust strings they go through a C string and a key with a NUL in it would be cut
        // short.
        entries.push((
            Value::from(key.to_js_string()?.to_string()?),
            back.into_value(),
        ));
    }
    if same {
        if matched == expected.len() {
            return Ok(made.same(from_map.expect("only an origin can match").0));
        }
        entries.extend_from_slice(&expected[..matched]);
    }
    Ok(Back::New(Value::Map(Map::from_iter(entries))))
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

    #[test]
    fn a_program_whose_results_reuse_nothing_notes_one_run_in_a_probe() {
        let reuse = Reuse(AtomicU32::new(0));
        assert!(reuse.record());
        reuse.ran(true, false);
        let noted = (0..PROBE_EVERY * 2)
            .filter(|_| {
                let record = reuse.record();
                reuse.ran(record, false);
                record
            })
            .count();
        assert_eq!(noted, 2);
        reuse.ran(true, true);
        assert!(reuse.record());
    }

    /// Runs `code` on `input` once, noting what the input became or not.
    fn run_noting(code: &str, input: &Value, record: bool) -> Result<Value, String> {
        let source = factory("javascript", code).unwrap();
        let engine = Engine::new("javascript", &source).unwrap();
        let reuse = Reuse(AtomicU32::new(u32::from(!record)));
        engine
            .context
            .with(|ctx| invoke(&ctx, input, &reuse))
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
}
