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

/// A map key with a NUL character came back cut at the NUL (`"a\0b"` as `"a"`, `"\0"` as
/// `""`, where it then collided with a real `""` key): rquickjs's `Atom::to_string` reads
/// the name as a C string. The `javascript` fuzz target skips such keys until this passes.
#[test]
#[ignore = "fails: object keys are read back through a C string; see the doc comment"]
fn javascript_keeps_map_keys_with_nul() {
    let input = Value::Map(Map::from_iter([
        (Value::from(""), Value::Int(1)),
        (Value::from("\0"), Value::Int(2)),
        (Value::from("a\0b"), Value::Int(3)),
    ]));
    assert_eq!(
        identity("javascript", "export default (input) => input", &input),
        input
    );
}

/// A map key `__proto__` (a JSON body may carry one) set the object's prototype instead of
/// an own property, so the entry vanished from the result and its fields showed through
/// every lookup on the object (`input.a` was 1 below). `JSON.parse` makes it an own
/// property; defining the properties instead of assigning them would too.
#[test]
#[ignore = "fails: map entries are assigned, and `__proto__` assigns the prototype"]
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
