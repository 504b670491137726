//! JSON merge patch (RFC 7386) over values.

use uniflow_value::{Map, Value};

/// `target` with `patch` applied: a map patch sets each of its keys (a `null` removes it),
/// recursively; anything else replaces the target.
pub(crate) fn merge(target: &Value, patch: &Value) -> Value {
    let Value::Map(changes) = patch else {
        return patch.clone();
    };
    let mut out: Map = match target {
        Value::Map(m) => m.clone(),
        _ => Map::default(),
    };
    for (key, change) in changes.iter() {
        if matches!(change, Value::Null) {
            out = out
                .iter()
                .filter(|(k, _)| *k != key)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        } else {
            let merged = merge(out.get_value(key).unwrap_or(&Value::Null), change);
            out = out.with(key.clone(), merged);
        }
    }
    Value::Map(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(json: &str) -> Value {
        serde_json::from_str(json).unwrap()
    }

    /// The examples of RFC 7386, appendix A.
    #[test]
    fn the_rfc_examples() {
        for (target, patch, want) in [
            (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
            (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
            (
                r#"{"a":{"b":"c"}}"#,
                r#"{"a":{"b":"d","c":null}}"#,
                r#"{"a":{"b":"d"}}"#,
            ),
            (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
            (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
            (r#"{"a":"foo"}"#, "null", "null"),
            (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
            (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"a":1,"e":null}"#),
            (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
            (
                r#"{}"#,
                r#"{"a":{"bb":{"ccc":null}}}"#,
                r#"{"a":{"bb":{}}}"#,
            ),
        ] {
            assert_eq!(merge(&v(target), &v(patch)), v(want), "{target} + {patch}");
        }
    }
}
