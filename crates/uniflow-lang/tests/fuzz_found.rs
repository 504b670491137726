//! Inputs the fuzz targets (`fuzz/fuzz_targets/cel.rs`, `javascript.rs`) found, as plain
//! tests: each value must come back from an identity program as the conversion documents.

use uniflow_lang::Languages;
use uniflow_value::{Map, Value};

fn identity(language: &str, code: &str, input: &Value) -> Value {
    Languages::default()
        .compile(language, code)
        .unwrap()
        .run(input.clone())
        .unwrap()
}

/// A map key `__proto__` (a JSON body may carry one) set the object's prototype instead of
/// an own property, so the entry vanished from the result and its fields showed through
/// every lookup on the object (`input.a` was 1 below). Entries are now defined as own
/// properties, as `JSON.parse` makes them.
#[test]
fn javascript_keeps_a_proto_key_as_a_plain_entry() {
    let input = Value::Map(Map::from_iter([
        (
            Value::from("__proto__"),
            Value::Map(Map::from_iter([(Value::from("a"), Value::Int(1))])),
        ),
        (Value::from("b"), Value::Int(2)),
    ]));
    assert_eq!(
        identity("javascript", "export default (input) => input", &input),
        input
    );
    assert_eq!(
        identity(
            "javascript",
            "export default (input) => [Object.keys(input).length, input.a === undefined]",
            &input
        ),
        Value::from(vec![Value::Int(2), Value::Bool(true)])
    );
}
