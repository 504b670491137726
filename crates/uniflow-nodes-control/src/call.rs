//! `call` (also `pipe`, its later upstream name): a sub-call, then the rest of the flow.
//!
//! The input goes to `out[0]`; its answer goes on to `out[1]`, or to `error` when it is an
//! error, and that port's answer is the call's answer. Unlinked, `out[1]` sends the sub-call's
//! answer back as it is. A sub-call answering `None` answers `None`: there is nothing to pass
//! on.

use serde::Deserialize;
use uniflow_core::shape::indexed::{self, ERROR};
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, port};
use uniflow_spec::Diagnostic;

/// The kind name.
pub const KIND: &str = "call";
/// The kind's later upstream name.
pub const ALIAS: &str = "pipe";

/// The fields of a `call` spec: none.
#[derive(Debug, Deserialize)]
pub struct CallSpec {}

impl NodeSpec for CallSpec {
    const KIND: &'static str = KIND;

    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(CallNode))
    }
}

const IN: InPort = InPort(0);
const CALL: OutPort = indexed::out(0);
const NEXT: OutPort = indexed::out(1);

/// The compiled `call`.
pub struct CallNode;

impl Node for CallNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        (name == port::IN).then_some(IN)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        indexed::out_port_below(name, 2)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        if packet.is_none() {
            return Flow::Ready(Packet::None);
        }
        cx.write(CALL, packet).then(move |answer| match answer {
            Packet::None => Flow::Ready(Packet::None),
            error if error.is_error() => cx.write(ERROR, error),
            result => cx.write(NEXT, result),
        })
    }
}
