//! Mock node kinds for tests: they exercise the protocol without any real node crate.
//!
//! | kind | fields | behaviour |
//! |---|---|---|
//! | `test-echo` | | writes its input to `out` |
//! | `test-const` | `value` | writes `value` to `out` |
//! | `test-fail` | `message` | writes an error with `message` to `error` |
//! | `test-panic` | | panics (a node bug); the listener must answer 500 and keep serving |
//! | `test-delay` | `millis` | waits, then writes its input to `out` (the pending path) |
//! | `test-record` | `tag` | appends `tag` to the process's [`recorded`] list, then echoes |
//! | `test-wrap` | `key` | writes `{key: input}` to `out` (shows a request without its `status`) |
//! | `test-log` | `tag` | appends `tag` to a global log read by [`logged`], then echoes |
//! | `test-on-exit` | `tag` | asks for the process and logs `"<tag>: <exit error or ok>"` to the same log when it exits, then echoes |
//! | `test-source` | `tag`, `fail` | a source: keeps its place as a listener does ([`SourceNode::fire`] writes to `out` from it), logs `load:`, `adopt:`, `moved:` and `unload:` with its tag, fails to load when `fail`; on `in` answers how many packets it has had (its state) |

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use uniflow_spec::Diagnostic;
use uniflow_value::{ErrorValue, Value};

use crate::node::{Cx, Flow, InPort, LoadCx, Node, OutPort, Place};
use crate::packet::Packet;
use crate::process::Process;
use crate::registry::{CompileCx, NodeSpec, Registry};
use crate::shape::{OUT, OneToOne, Transform};

/// Adds the mock kinds.
pub fn register(registry: &mut Registry) {
    registry.add::<EchoSpec>();
    registry.add::<ConstSpec>();
    registry.add::<FailSpec>();
    registry.add::<PanicSpec>();
    registry.add::<DelaySpec>();
    registry.add::<RecordSpec>();
    registry.add::<LogSpec>();
    registry.add::<WrapSpec>();
    registry.add::<OnExitSpec>();
    registry.add::<SourceSpec>();
}

/// How many times `test-log` nodes with this tag have run, in any process.
pub fn logged(tag: &str) -> usize {
    LOG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|t| *t == tag)
        .count()
}

static LOG: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The tags `test-record` nodes appended for this process, in order.
pub fn recorded(proc: &Process) -> Vec<String> {
    proc.with_local(&RECORD, |v| v.clone())
}

static RECORD: crate::Local<Vec<String>> = crate::Local::new();

macro_rules! one_to_one_kind {
    ($spec:ident, $kind:literal, |$this:ident, $cx:ident, $input:ident| $body:expr) => {
        impl NodeSpec for $spec {
            const KIND: &'static str = $kind;
            fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
                Ok(Box::new(OneToOne(self)))
            }
        }
        impl Transform for $spec {
            fn transform(&self, $cx: &Cx<'_>, $input: Value) -> Result<Value, ErrorValue> {
                let $this = self;
                let _ = $cx;
                $body
            }
        }
    };
}

/// `test-echo`.
#[derive(Deserialize)]
pub struct EchoSpec {}
one_to_one_kind!(EchoSpec, "test-echo", |_this, _cx, input| Ok(input));

/// `test-const`.
#[derive(Deserialize)]
pub struct ConstSpec {
    value: Value,
}
one_to_one_kind!(ConstSpec, "test-const", |this, _cx, _input| Ok(this
    .value
    .clone()));

/// `test-fail`.
#[derive(Deserialize)]
pub struct FailSpec {
    message: String,
}
one_to_one_kind!(FailSpec, "test-fail", |this, _cx, _input| Err(
    ErrorValue::new(this.message.clone())
));

/// `test-panic`.
#[derive(Deserialize)]
pub struct PanicSpec {}
one_to_one_kind!(PanicSpec, "test-panic", |_this, _cx, _input| panic!(
    "test-panic node was asked to panic"
));

/// `test-record`.
#[derive(Deserialize)]
pub struct RecordSpec {
    tag: String,
}
one_to_one_kind!(RecordSpec, "test-record", |this, cx, input| {
    cx.proc().with_local(&RECORD, |v| v.push(this.tag.clone()));
    Ok(input)
});

/// `test-wrap`.
#[derive(Deserialize)]
pub struct WrapSpec {
    key: String,
}
one_to_one_kind!(WrapSpec, "test-wrap", |this, _cx, input| Ok(Value::Map(
    [(Value::from(this.key.clone()), input)]
        .into_iter()
        .collect()
)));

/// `test-on-exit`.
#[derive(Deserialize)]
pub struct OnExitSpec {
    tag: String,
}
one_to_one_kind!(OnExitSpec, "test-on-exit", |this, cx, input| {
    let tag = this.tag.clone();
    cx.proc().on_exit(move |error| {
        let how = error.map_or_else(|| "ok".to_owned(), |e| e.message().to_string());
        LOG.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{tag}: {how}"));
    });
    Ok(input)
});

/// `test-log`.
#[derive(Deserialize)]
pub struct LogSpec {
    tag: String,
}
one_to_one_kind!(LogSpec, "test-log", |this, _cx, input| {
    LOG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(this.tag.clone());
    Ok(input)
});

/// `test-delay`.
#[derive(Deserialize)]
pub struct DelaySpec {
    millis: u64,
}

impl NodeSpec for DelaySpec {
    const KIND: &'static str = "test-delay";
    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(DelayNode(Duration::from_millis(self.millis))))
    }
}

struct DelayNode(Duration);

impl Node for DelayNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        crate::shape::in_port(name)
    }
    fn out_port(&self, name: &str) -> Option<OutPort> {
        crate::shape::out_port(name)
    }
    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        Flow::pending(async move {
            tokio::time::sleep(self.0).await;
            cx.write(OUT, packet).await
        })
    }
}

/// `test-source`.
#[derive(Deserialize)]
pub struct SourceSpec {
    tag: String,
    #[serde(default)]
    fail: bool,
}

impl NodeSpec for SourceSpec {
    const KIND: &'static str = "test-source";
    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(SourceNode {
            tag: self.tag,
            fail: self.fail,
            place: Place::default(),
            count: AtomicI64::new(0),
        }))
    }
}

/// The `test-source` node.
pub struct SourceNode {
    tag: String,
    fail: bool,
    place: Place,
    count: AtomicI64,
}

impl SourceNode {
    /// Writes `value` to `out` from where the node is now, in a process of its own, as a
    /// listener does with a request.
    ///
    /// # Panics
    /// If the node is not loaded.
    pub async fn fire(&self, value: Value) -> Packet {
        let place = self.place.get().expect("the source is loaded");
        let proc = Process::new();
        let answer = place.run(&proc, |cx| cx.send(OUT, value)).await;
        proc.exit(None);
        answer
    }

    fn log(&self, what: &str) {
        LOG.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{what}:{}", self.tag));
    }
}

impl Node for SourceNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        crate::shape::in_port(name)
    }
    fn out_port(&self, name: &str) -> Option<OutPort> {
        crate::shape::out_port(name)
    }
    fn handle<'a>(&'a self, _cx: Cx<'a>, _port: InPort, _packet: Packet) -> Flow<'a> {
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        Flow::Ready(Packet::Data(Value::from(count)))
    }
    fn adopt(&self, previous: &dyn Node) {
        if let Some(previous) = previous.downcast_ref::<SourceNode>() {
            self.log(&format!("adopt({})", previous.tag));
        }
    }
    fn load(&self, cx: LoadCx) -> Result<(), crate::Error> {
        self.log("load");
        self.place.set(cx);
        if self.fail {
            return Err(crate::Error::Start(format!(
                "{} was told to fail",
                self.tag
            )));
        }
        Ok(())
    }
    fn moved(&self, cx: LoadCx) {
        self.log("moved");
        self.place.set(cx);
    }
    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.log("unload");
        self.place.clear();
        Box::pin(std::future::ready(()))
    }
}

/// Every entry of the global log that ends with `:tag`, in order (the `test-source` events).
pub fn events(tag: &str) -> Vec<String> {
    let suffix = format!(":{tag}");
    LOG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|t| t.ends_with(&suffix))
        .cloned()
        .collect()
}
