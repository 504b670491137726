//! `nop`: accepts any packet and answers `None`, ending a flow without a response body.
//!
//! It is also the conventional holder of an `init` port (`examples/helloworld.yaml`).

use serde::Deserialize;
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, port, shape};
use uniflow_spec::Diagnostic;

/// The fields of a `nop` spec: none.
#[derive(Debug, Deserialize)]
pub struct NopSpec {}

impl NodeSpec for NopSpec {
    const KIND: &'static str = "nop";

    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(NopNode))
    }
}

/// The compiled `nop`.
pub struct NopNode;

impl Node for NopNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        (name == port::IN).then_some(shape::IN)
    }

    fn out_port(&self, _name: &str) -> Option<OutPort> {
        None
    }

    fn handle<'a>(&'a self, _cx: Cx<'a>, _port: InPort, _packet: Packet) -> Flow<'a> {
        Flow::Ready(Packet::None)
    }
}
