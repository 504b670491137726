//! Durations in specs: an integer of nanoseconds (upstream, Oct 2024) or a Go-style string
//! such as `"250ms"`, `"5s"` or `"1m30s"` (upstream's later form).

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use uniflow_value::Value;

/// Parses `"1h2m3.5s"`, `"250ms"`, `"10us"`/`"10µs"`, `"5ns"`, or a bare number of nanoseconds.
///
/// # Errors
/// A message saying what is malformed.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(nanos) = text.parse::<u64>() {
        return Ok(Duration::from_nanos(nanos));
    }
    let bad = || {
        format!("invalid duration {text:?}: use nanoseconds or e.g. \"250ms\", \"5s\", \"1m30s\"")
    };
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if number_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// `deserialize_with` for an optional duration field.
///
/// # Errors
/// A value that is neither a non-negative integer nor a duration string.
pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Int(n) if n >= 0 => Ok(Some(Duration::from_nanos(n as u64))),
        Value::Uint(n) => Ok(Some(Duration::from_nanos(n))),
        Value::String(s) => parse(&s).map(Some).map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!(
            "invalid duration: expected nanoseconds or a string like \"5s\", found {}",
            other.kind_name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations_and_nanoseconds() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("1000").unwrap(), Duration::from_micros(1));
        assert_eq!(parse("10us").unwrap(), Duration::from_micros(10));
        for bad in ["", "s", "5x", "1..2s", "-1s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
