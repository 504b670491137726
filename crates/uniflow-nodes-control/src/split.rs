//! `split`: sends element `i` of a list to `out[i]` and answers the merge of their answers.
//!
//! A payload that is not a list goes to `out[0]`. Elements whose port does not exist (no link
//! on it or on a higher-numbered `out`) are dropped, as upstream did; an empty list, or one
//! whose elements are all dropped, answers `None`. The ports run concurrently, like the targets
//! of a fan-out, and their answers merge in port order: `None`s dropped, errors joined, one
//! answer as itself, several as a list.

use serde::Deserialize;
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, port};
use uniflow_spec::{Diagnostic, PortName};
use uniflow_value::{List, Value};

/// The kind name.
pub const KIND: &str = "split";

/// The fields of a `split` spec: none.
#[derive(Debug, Deserialize)]
pub struct SplitSpec {}

impl NodeSpec for SplitSpec {
    const KIND: &'static str = KIND;

    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(SplitNode))
    }
}

const IN: InPort = InPort(0);

/// The compiled `split`.
pub struct SplitNode;

impl Node for SplitNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        (name == port::IN).then_some(IN)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        PortName::parse(name)
            .index_of(port::OUT, true)
            .map(|i| OutPort(i as u32))
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(input) = packet else {
            return Flow::Ready(Packet::None);
        };
        let items = match input {
            Value::List(items) => items,
            other => List::one(other),
        };
        // Ports exist up to the highest linked one, so the first missing port ends the run.
        let flows: Vec<Flow<'a>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| (OutPort(i as u32), item))
            .take_while(|(port, _)| cx.port_exists(*port))
            .map(|(port, item)| cx.send(port, item.clone()))
            .collect();
        Flow::merge_all(flows)
    }
}
