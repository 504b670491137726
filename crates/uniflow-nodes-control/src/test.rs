//! `test`: a suite that `uniflow test` runs, named `namespace/name`.
//!
//! A run writes `null` to `out[0]` (`out`), in a process of its own: the flow under test. An
//! error answer fails the suite; `None` passes it; any other answer is written to `out[1]` as
//! `[answer, -1]` (the answer, and the frame index an `assert`'s `target` searches from), and
//! an error answer there fails it. Outside `uniflow test` the node does nothing: a workflow may
//! carry its tests and still be started.
//!
//! A test with nothing linked on `out[0]` tests nothing, so it fails the spec at load, naming
//! the field, instead of passing for ever.

use serde::Deserialize;
use uniflow_core::{
    CompileCx, Cx, Flow, InPort, LoadCx, Node, NodeSpec, OutPort, Packet, Place, Process,
};
use uniflow_spec::{Diagnostic, PortName};
use uniflow_value::{ErrorValue, Value};

/// The kind name.
pub const KIND: &str = "test";

/// The fields of a `test` spec: none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {}

const RUN: OutPort = OutPort(0);
const CHECK: OutPort = OutPort(1);

/// The compiled `test`.
pub struct TestNode {
    /// Where the node sits, once loaded: a run writes from there.
    place: Place,
}

impl NodeSpec for TestSpec {
    const KIND: &'static str = KIND;

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let runs = cx.spec.ports.iter().any(|(name, links)| {
            PortName::parse(name).index_of(uniflow_core::port::OUT, true) == Some(0)
                && !links.is_empty()
        });
        if !runs {
            return Err(vec![cx.error(
                "ports.out",
                "a test runs the flow linked to `out` (`out[0]`), and nothing is linked",
            )]);
        }
        Ok(Box::new(TestNode {
            place: Place::default(),
        }))
    }
}

impl TestNode {
    /// Runs the suite once; its error, when it fails.
    pub async fn run(&self) -> Result<(), ErrorValue> {
        let place = self
            .place
            .get()
            .ok_or_else(|| ErrorValue::new("the test is not loaded"))?;
        let proc = Process::new();
        let answer = place.run(&proc, |cx| cx.send(RUN, Value::Null)).await;
        let result = match answer {
            Packet::None => Ok(()),
            Packet::Data(Value::Error(e)) => Err(e),
            Packet::Data(answer) => {
                let checked = Value::from(vec![answer, Value::Int(-1)]);
                match place.run(&proc, |cx| cx.send(CHECK, checked)).await {
                    Packet::Data(Value::Error(e)) => Err(e),
                    _ => Ok(()),
                }
            }
        };
        proc.join().await;
        proc.exit(result.as_ref().err().cloned());
        result
    }
}

impl Node for TestNode {
    fn in_port(&self, _name: &str) -> Option<InPort> {
        None
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        match PortName::parse(name).index_of(uniflow_core::port::OUT, true)? {
            0 => Some(RUN),
            1 => Some(CHECK),
            _ => None,
        }
    }

    fn handle<'a>(&'a self, _cx: Cx<'a>, _port: InPort, _packet: Packet) -> Flow<'a> {
        Flow::Ready(Packet::error("a test has no input port"))
    }

    fn load(&self, cx: LoadCx) -> Result<(), uniflow_core::Error> {
        self.place.set(cx);
        Ok(())
    }

    fn moved(&self, cx: LoadCx) {
        self.place.set(cx);
    }
}
