//! `try`: sends errors from anywhere downstream of `out` to `error`.
//!
//! The input goes to `out`. When its answer is an error, whichever node downstream failed and
//! however deep, that error goes to `error`, and `error`'s answer is the answer: a linked
//! handler catches it, an unlinked `error` sends it back as it is. Any other answer passes
//! through.

use serde::Deserialize;
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, shape};
use uniflow_spec::Diagnostic;

/// The kind name.
pub const KIND: &str = "try";

/// The fields of a `try` spec: none.
#[derive(Debug, Deserialize)]
pub struct TrySpec {}

impl NodeSpec for TrySpec {
    const KIND: &'static str = KIND;

    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(TryNode))
    }
}

/// The compiled `try`.
pub struct TryNode;

impl Node for TryNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        shape::in_port(name)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        shape::out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        if packet.is_none() {
            return Flow::Ready(Packet::None);
        }
        cx.write(shape::OUT, packet).then(move |answer| {
            if answer.is_error() {
                cx.write(shape::ERROR, answer)
            } else {
                Flow::Ready(answer)
            }
        })
    }
}
