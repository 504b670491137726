//! `throw`: answers every packet with an error made from its payload.
//!
//! A string is the message; an error is thrown again as it is; a number or a boolean is its
//! text; anything else is rendered as it prints in logs. A list throws one error per non-null
//! element, joined, so a handler's `self == "message"` matches any of them (upstream nested the
//! messages into one text). A payload with no message at all (null, an empty list) still
//! throws: a `throw` that answered a value would let the flow go on as if nothing failed
//! (upstream answered null).

use serde::Deserialize;
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, shape};
use uniflow_spec::Diagnostic;
use uniflow_value::{ErrorValue, Value};

/// The kind name.
pub const KIND: &str = "throw";

/// The message of an error thrown without one.
pub const NO_MESSAGE: &str = "error thrown without a message";

/// The fields of a `throw` spec: none.
#[derive(Debug, Deserialize)]
pub struct ThrowSpec {}

impl NodeSpec for ThrowSpec {
    const KIND: &'static str = KIND;

    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(ThrowNode))
    }
}

/// The compiled `throw`.
pub struct ThrowNode;

fn error_of(value: &Value) -> ErrorValue {
    match value {
        Value::Error(e) => e.clone(),
        Value::String(s) => ErrorValue::new(s.clone()),
        Value::Bool(b) => ErrorValue::new(b.to_string()),
        Value::Int(i) => ErrorValue::new(i.to_string()),
        Value::Uint(u) => ErrorValue::new(u.to_string()),
        Value::Float(f) => ErrorValue::new(f.to_string()),
        other => ErrorValue::new(format!("{other:?}")),
    }
}

impl Node for ThrowNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        shape::in_port(name)
    }

    fn out_port(&self, _name: &str) -> Option<OutPort> {
        None
    }

    fn handle<'a>(&'a self, _cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(payload) = packet else {
            return Flow::Ready(Packet::None);
        };
        let errors: Vec<ErrorValue> = match &payload {
            Value::List(items) => items
                .iter()
                .filter(|v| !matches!(v, Value::Null))
                .map(error_of)
                .collect(),
            Value::Null => Vec::new(),
            other => vec![error_of(other)],
        };
        let error = if errors.is_empty() {
            ErrorValue::new(NO_MESSAGE)
        } else {
            ErrorValue::join(errors)
        };
        Flow::Ready(Packet::Data(Value::Error(error)))
    }
}
