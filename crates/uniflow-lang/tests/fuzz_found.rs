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

/// A list nested 250 deep, its innermost holding a float that comes back as an integer: each
/// level checked whether its items came back as they were, and on finding one that did not,
/// converted them all again, so the work doubled at every level and the run never ended. The
/// run is watched from another thread, so a regression fails here instead of hanging.
#[test]
fn javascript_hands_back_a_deeply_nested_changed_list() {
    let mut input = Value::from(vec![Value::Null, Value::Float(0.0), Value::Null]);
    let mut expected = Value::from(vec![Value::Null, Value::Int(0), Value::Null]);
    for _ in 0..250 {
        input = Value::from(vec![input]);
        expected = Value::from(vec![expected]);
    }
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(identity(
            "javascript",
            "export default (input) => input",
            &input,
        ));
    });
    let output = outcome
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the identity came back within a minute");
    assert_eq!(output, expected);
}
