//! Packets and the merge of fan-out answers.

use uniflow_value::{ErrorValue, List, Value};

/// What travels through a port: a value, or `None`, the answer that means "accepted, nothing to
/// say". A packet holding `Value::Null` is not `None`: the former renders `null`, the latter
/// renders nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Packet {
    /// Accepted, no response.
    #[default]
    None,
    /// A payload; an error is a payload holding `Value::Error`.
    Data(Value),
}

impl Packet {
    /// A packet holding an error with this message.
    pub fn error(message: impl Into<uniflow_value::Str>) -> Packet {
        Packet::Data(Value::Error(ErrorValue::new(message)))
    }

    /// Whether this is `None`.
    pub fn is_none(&self) -> bool {
        matches!(self, Packet::None)
    }

    /// Whether the payload is an error.
    pub fn is_error(&self) -> bool {
        matches!(self, Packet::Data(Value::Error(_)))
    }

    /// The payload, if any.
    pub fn value(&self) -> Option<&Value> {
        match self {
            Packet::None => None,
            Packet::Data(v) => Some(v),
        }
    }

    /// The payload, `Null` for `None`.
    pub fn into_value(self) -> Value {
        match self {
            Packet::None => Value::Null,
            Packet::Data(v) => v,
        }
    }
}

impl From<Value> for Packet {
    fn from(v: Value) -> Self {
        Packet::Data(v)
    }
}

impl From<ErrorValue> for Packet {
    fn from(e: ErrorValue) -> Self {
        Packet::Data(Value::Error(e))
    }
}

/// Merges the answers of a fan-out into one: `None`s are dropped; any errors join into one
/// error; nothing left is `None`; one payload is itself; several become a list in order.
pub fn merge(packets: Vec<Packet>) -> Packet {
    let mut values = Vec::with_capacity(packets.len());
    let mut errors = Vec::new();
    for packet in packets {
        match packet {
            Packet::None => {}
            Packet::Data(Value::Error(e)) => errors.push(e),
            Packet::Data(v) => values.push(v),
        }
    }
    if !errors.is_empty() {
        return Packet::Data(Value::Error(ErrorValue::join(errors)));
    }
    match values.len() {
        0 => Packet::None,
        1 => Packet::Data(values.pop().expect("one value")),
        _ => Packet::Data(Value::List(List::from(values))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_drops_none_and_keeps_order() {
        assert_eq!(merge(vec![]), Packet::None);
        assert_eq!(merge(vec![Packet::None, Packet::None]), Packet::None);
        let a = Packet::Data(Value::from("a"));
        assert_eq!(merge(vec![Packet::None, a.clone()]), a);
        let b = Packet::Data(Value::from("b"));
        assert_eq!(
            merge(vec![a, Packet::None, b]),
            Packet::Data(Value::from(vec![Value::from("a"), Value::from("b")]))
        );
    }

    #[test]
    fn merge_joins_errors_over_values() {
        let merged = merge(vec![
            Packet::Data(Value::from("a")),
            Packet::error("x"),
            Packet::error("y"),
        ]);
        let Packet::Data(Value::Error(e)) = merged else {
            panic!("not an error: {merged:?}")
        };
        assert!(e.is("x") && e.is("y"));
    }

    #[test]
    fn null_payload_is_not_none() {
        assert_eq!(
            merge(vec![Packet::Data(Value::Null)]),
            Packet::Data(Value::Null)
        );
    }
}
