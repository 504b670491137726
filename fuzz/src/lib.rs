//! What the fuzz targets share: payload values made from fuzzer bytes, and text drawn from a
//! small alphabet so that random bytes still spell the syntax a parser cares about.

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use uniflow_value::{ErrorValue, List, Map, Value};

/// Below this depth the generator makes lists and maps; at it, scalars only. Deeper values
/// come from [`nested`], which wraps a value in many lists at once.
const MAX_DEPTH: usize = 6;

/// At most this many items per list or map.
const MAX_ITEMS: usize = 5;

/// A payload of any kind, scalars with every bit pattern (NaN payloads, `-0.0`, integers
/// beyond 2^53), strings either arbitrary or from `alphabet`.
///
/// # Errors
/// Only `arbitrary`'s own; an exhausted input yields `null`s.
pub fn value(u: &mut Unstructured<'_>, alphabet: &[&str]) -> Result<Value> {
    value_at(u, alphabet, 0)
}

/// Like [`value`], but one time in sixteen wrapped in 250 to 260 lists, around the 256
/// levels that the language conversions refuse past.
///
/// # Errors
/// Only `arbitrary`'s own.
pub fn nested(u: &mut Unstructured<'_>, alphabet: &[&str]) -> Result<Value> {
    let mut v = value(u, alphabet)?;
    if u.ratio(1u8, 16)? {
        for _ in 0..u.int_in_range(250..=260)? {
            v = Value::List(List::one(v));
        }
    }
    Ok(v)
}

/// How many levels below `v` its deepest item sits: 0 for a scalar or an empty list, 1 for a
/// list of scalars. Map keys do not count: the conversions do not recurse into them.
pub fn depth(v: &Value) -> usize {
    let below = match v {
        Value::List(items) => items.iter().map(depth).max(),
        Value::Map(map) => map.iter().map(|(_, v)| depth(v)).max(),
        _ => None,
    };
    below.map_or(0, |d| d + 1)
}

fn value_at(u: &mut Unstructured<'_>, alphabet: &[&str], level: usize) -> Result<Value> {
    let kinds = if level >= MAX_DEPTH { 8 } else { 10 };
    Ok(match u.choose_index(kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Int(u.arbitrary()?),
        // Through `From`, which keeps the invariant that a `Uint` does not fit an `Int`.
        3 => Value::from(u.arbitrary::<u64>()?),
        4 => Value::Float(f64::from_bits(u.arbitrary()?)),
        5 => Value::from(string(u, alphabet)?),
        6 => Value::Bytes(Bytes::copy_from_slice(u.arbitrary::<&[u8]>()?)),
        7 => Value::Error(ErrorValue::new(string(u, alphabet)?)),
        8 => {
            let n = u.int_in_range(0..=MAX_ITEMS)?;
            let items = (0..n)
                .map(|_| value_at(u, alphabet, level + 1))
                .collect::<Result<Vec<_>>>()?;
            Value::List(List::from(items))
        }
        _ => {
            let n = u.int_in_range(0..=MAX_ITEMS)?;
            let entries = (0..n)
                .map(|_| {
                    // Mostly string keys, as in JSON; the rest any scalar, as YAML allows.
                    let key = if u.ratio(3u8, 4)? {
                        Value::from(string(u, alphabet)?)
                    } else {
                        value_at(u, alphabet, MAX_DEPTH)?
                    };
                    Ok((key, value_at(u, alphabet, level + 1)?))
                })
                .collect::<Result<Vec<_>>>()?;
            Value::Map(Map::from_iter(entries))
        }
    })
}

/// A string: arbitrary UTF-8 half the time, else up to eight pieces of `alphabet`.
///
/// # Errors
/// Only `arbitrary`'s own.
pub fn string(u: &mut Unstructured<'_>, alphabet: &[&str]) -> Result<String> {
    if alphabet.is_empty() || u.arbitrary()? {
        return Ok(u.arbitrary::<&str>()?.to_owned());
    }
    let mut out = String::new();
    for _ in 0..u.int_in_range(0..=8)? {
        out.push_str(u.choose(alphabet)?);
    }
    Ok(out)
}
