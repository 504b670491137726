//! Values into and out of JavaScript: the identity function gives back its input as the
//! conversion documents it (integers beyond 2^53 and unsigned ones come back as floats,
//! integral floats as integers, map keys as strings); a value nested deeper than the
//! conversion allows is an error, never a panic.

#![no_main]

use std::sync::{Arc, LazyLock};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use uniflow_fuzz::{depth, nested};
use uniflow_lang::{Languages, Program};
use uniflow_value::{List, Map, Value};

/// The depth past which the conversion refuses a value.
const MAX_NESTING: usize = 256;

/// 2^53: integers below it in magnitude are exact in a JavaScript number.
const SAFE: f64 = 9_007_199_254_740_992.0;

static IDENTITY: LazyLock<Arc<dyn Program>> = LazyLock::new(|| {
    Languages::default()
        .compile("javascript", "export default (input) => input")
        .unwrap_or_else(|e| panic!("{e}"))
});

/// A JavaScript number as it comes back.
fn number(f: f64) -> Value {
    if f.is_nan() {
        // QuickJS may change a NaN's payload; every NaN compares as this one.
        Value::Float(f64::NAN)
    } else if f.fract() == 0.0 && f.abs() < SAFE && !(f == 0.0 && f.is_sign_negative()) {
        Value::Int(f as i64)
    } else {
        Value::Float(f)
    }
}

/// A map key as a JavaScript property name: a string as it is, a number as Rust prints it,
/// anything else (null, a boolean, bytes, a list...) in its debug form.
fn key(k: &Value) -> String {
    match k {
        Value::String(s) => s.to_string(),
        Value::Uint(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        other => format!("{other:?}"),
    }
}

/// What JavaScript gives back for `v`.
fn through_js(v: &Value) -> Value {
    match v {
        Value::Int(i) if (*i as f64).abs() < SAFE => Value::Int(*i),
        Value::Int(i) => Value::Float(*i as f64),
        Value::Uint(u) => Value::Float(*u as f64),
        Value::Float(f) => number(*f),
        Value::List(items) => Value::List(items.iter().map(through_js).collect::<List>()),
        // Setting a key again overwrites it, as the last of a repeated key wins in a `Map`.
        Value::Map(m) => Value::Map(
            m.iter()
                .map(|(k, v)| (Value::from(key(k)), through_js(v)))
                .collect::<Map>(),
        ),
        other => other.clone(),
    }
}

/// `v` with every NaN the same NaN.
fn same_nan(v: Value) -> Value {
    match v {
        Value::Float(f) if f.is_nan() => Value::Float(f64::NAN),
        Value::List(items) => Value::List(items.iter().cloned().map(same_nan).collect::<List>()),
        Value::Map(m) => Value::Map(
            m.iter()
                .map(|(k, v)| (k.clone(), same_nan(v.clone())))
                .collect::<Map>(),
        ),
        other => other,
    }
}

/// Keys that JavaScript treats specially, and property names in general.
const ALPHABET: &[&str] = &[
    "__proto__",
    "toJSON",
    "constructor",
    "length",
    "0",
    "1",
    "-0",
    "1e3",
    "a",
    "\0",
];

fuzz_target!(|data: &[u8]| {
    let Ok(input) = nested(&mut Unstructured::new(data), ALPHABET) else {
        return;
    };
    let output = IDENTITY.run(input.clone());
    if depth(&input) > MAX_NESTING {
        assert!(output.is_err(), "a value too deep to convert is refused");
    } else {
        assert_eq!(
            output.map(same_nan).map_err(|e| e.to_string()),
            Ok(through_js(&input))
        );
    }
});
