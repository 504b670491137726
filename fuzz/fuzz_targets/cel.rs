//! Values into and out of CEL: `self` gives back its input, except for map entries under keys
//! CEL cannot have (null, float, bytes, list, map, error), which the conversion leaves out;
//! a value nested deeper than the conversion allows is an error, never a panic.

#![no_main]

use std::sync::{Arc, LazyLock};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use uniflow_fuzz::{depth, nested};
use uniflow_lang::{Languages, Program};
use uniflow_value::{List, Map, Value};

/// The depth past which the conversion refuses a value.
const MAX_NESTING: usize = 256;

static IDENTITY: LazyLock<Arc<dyn Program>> = LazyLock::new(|| {
    Languages::default()
        .compile("cel", "self")
        .unwrap_or_else(|e| panic!("{e}"))
});

/// What CEL gives back for `v`.
fn through_cel(v: &Value) -> Value {
    match v {
        Value::List(items) => Value::List(items.iter().map(through_cel).collect::<List>()),
        Value::Map(m) => Value::Map(
            m.iter()
                .filter(|(k, _)| {
                    matches!(
                        k,
                        Value::String(_) | Value::Int(_) | Value::Uint(_) | Value::Bool(_)
                    )
                })
                .map(|(k, v)| (k.clone(), through_cel(v)))
                .collect::<Map>(),
        ),
        other => other.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = nested(&mut Unstructured::new(data), &["", "a", "self", "0", "\0"]) else {
        return;
    };
    let output = IDENTITY.run(input.clone());
    // Entries the conversion leaves out are not converted, so they do not count.
    let expected = through_cel(&input);
    if depth(&expected) > MAX_NESTING {
        assert!(output.is_err(), "a value too deep to convert is refused");
    } else {
        assert_eq!(output.map_err(|e| e.to_string()), Ok(expected));
    }
});
