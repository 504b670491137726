//! `Serialize` for [`Value`], shaped for JSON output as upstream rendered it.
//!
//! Bytes become a base64 string and an error its message (Go's encoders did the same). An
//! integral float prints without decimals, so `2.0` renders `2` as in Go. Empty maps and lists
//! render `{}` and `[]` (upstream rendered `null`; see `docs/decisions.md`).

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::Value;

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Uint(u) => s.serialize_u64(*u),
            Value::Float(f) => {
                // 2^53 bounds the integers a float holds exactly.
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                    s.serialize_i64(*f as i64)
                } else {
                    s.serialize_f64(*f)
                }
            }
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(b) => {
                let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
                write_base64(b, &mut out);
                s.serialize_str(&out)
            }
            Value::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for item in l.iter() {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m.iter() {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Value::Error(e) => s.serialize_str(e.message()),
        }
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends the standard, padded base64 encoding of `bytes` to `out` (Go's encoding of
/// `[]byte` in JSON).
pub fn write_base64(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bytes, Map};

    #[test]
    fn renders_like_go_json() {
        let m: Map = [
            ("f", Value::Float(2.0)),
            ("g", Value::Float(2.5)),
            ("e", Value::Map(Map::new())),
            ("l", Value::List(Vec::new().into())),
            ("b", Value::Bytes(Bytes::from_static(b"hi!?"))),
        ]
        .into();
        let json = serde_json::to_string(&Value::Map(m)).unwrap();
        assert_eq!(json, r#"{"b":"aGkhPw==","e":{},"f":2,"g":2.5,"l":[]}"#);
    }

    #[test]
    fn base64_pads() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            let mut out = String::new();
            write_base64(input.as_bytes(), &mut out);
            assert_eq!(out, want, "{input}");
        }
    }
}
