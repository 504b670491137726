//! `loop` (also `for`, its later upstream name): runs `out[0]` once per element of a list and
//! answers the list of their answers.
//!
//! Each element is written to `out[0]` in the same process; a payload that is not a list is
//! one element. The answers, in input order with `None`s dropped, form a list that is written
//! to `out[1]`, whose answer (the list itself when unlinked) is the loop's answer. If any
//! answer is an error, their join goes to `error` instead. An empty list answers `[]`
//! (upstream never answered it, and the request hung), and a one-element list answers a
//! one-element list (upstream unwrapped it), so the answer's shape never depends on the count.
//!
//! Iterations run one after another: element `i + 1` is written once element `i` is
//! answered. Upstream delivered the elements in order to each downstream node, one at a time,
//! so stateful bodies (`reduce`, `session`) see them in input order; running them one by one
//! keeps that and bounds the work in flight.

use serde::Deserialize;
use uniflow_core::shape::indexed::{self, ERROR};
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, port};
use uniflow_spec::Diagnostic;
use uniflow_value::{ErrorValue, List, Value};

/// The kind name.
pub const KIND: &str = "loop";
/// The kind's later upstream name.
pub const ALIAS: &str = "for";

/// The fields of a `loop` spec: none.
#[derive(Debug, Deserialize)]
pub struct LoopSpec {}

impl NodeSpec for LoopSpec {
    const KIND: &'static str = KIND;

    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(LoopNode))
    }
}

const IN: InPort = InPort(0);
const BODY: OutPort = indexed::out(0);
const DONE: OutPort = indexed::out(1);

/// The compiled `loop`.
pub struct LoopNode;

impl LoopNode {
    /// Writes the gathered answers on: their errors to `error`, else their list to `out[1]`.
    fn finish<'a>(cx: Cx<'a>, answers: Vec<Packet>) -> Flow<'a> {
        let mut values = Vec::with_capacity(answers.len());
        let mut errors = Vec::new();
        for answer in answers {
            match answer {
                Packet::None => {}
                Packet::Data(Value::Error(e)) => errors.push(e),
                Packet::Data(v) => values.push(v),
            }
        }
        if !errors.is_empty() {
            return cx.send(ERROR, Value::Error(ErrorValue::join(errors)));
        }
        cx.send(DONE, Value::List(List::from(values)))
    }
}

impl Node for LoopNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        (name == port::IN).then_some(IN)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        indexed::out_port_below(name, 2)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(input) = packet else {
            return Flow::Ready(Packet::None);
        };
        let items = match input {
            Value::List(items) => items,
            other => List::one(other),
        };
        let mut answers = Vec::with_capacity(items.len());
        // Stay on the ready path, without boxing, until an iteration must wait.
        for (i, item) in items.iter().enumerate() {
            match cx.send(BODY, item.clone()) {
                Flow::Ready(answer) => answers.push(answer),
                Flow::Pending(first) => {
                    return Flow::pending(async move {
                        answers.push(first.await);
                        for item in &items[i + 1..] {
                            answers.push(cx.send(BODY, item.clone()).await);
                        }
                        LoopNode::finish(cx, answers).await
                    });
                }
            }
        }
        LoopNode::finish(cx, answers)
    }
}
