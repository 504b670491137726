//! A subset of Go's `fmt` verbs, which upstream's `print` passed its payload to: `%v %s %d %f
//! %e %g %q %t %x %X %%`, with flags `-`, `0` and `+`, a width and a precision. Missing and
//! extra arguments render as Go renders them (`%!d(MISSING)`, `%!(EXTRA string=x)`). `scan`
//! reads its formats with the same `pieces`.

use std::fmt::Write;

use uniflow_value::Value;

/// A piece of a format string: text to copy (or, to `scan`, to match), or a verb with its
/// flags, width and precision. `%%` is text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Piece {
    /// A character of text.
    Text(char),
    /// `%` and what follows it.
    Verb(char, Spec),
    /// A `%` at the end of the format, with nothing after it.
    NoVerb,
}

/// The pieces of `format`, as Go's `fmt` reads them (`print` and `scan` share this).
pub(crate) fn pieces(format: &str) -> impl Iterator<Item = Piece> + '_ {
    let mut chars = format.chars().peekable();
    std::iter::from_fn(move || {
        let c = chars.next()?;
        if c != '%' {
            return Some(Piece::Text(c));
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.left = true,
                '0' => spec.zero = true,
                '+' => spec.plus = true,
                ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        spec.width = number(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(number(&mut chars).unwrap_or(0));
        }
        Some(match chars.next() {
            None => Piece::NoVerb,
            Some('%') => Piece::Text('%'),
            Some(verb) => Piece::Verb(verb, spec),
        })
    })
}

/// Formats `args` by `format`.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::with_capacity(format.len());
    let mut args = args.iter();
    for piece in pieces(format) {
        match piece {
            Piece::Text(c) => out.push(c),
            Piece::NoVerb => {
                out.push_str("%!(NOVERB)");
                break;
            }
            Piece::Verb(verb, spec) => {
                let Some(arg) = args.next() else {
                    let _ = write!(out, "%!{verb}(MISSING)");
                    continue;
                };
                let text = render(verb, arg, &spec);
                pad(&mut out, &text, &spec);
            }
        }
    }
    let extra: Vec<String> = args
        .map(|a| format!("{}={}", type_name(a), sprint(a)))
        .collect();
    if !extra.is_empty() {
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    out
}

/// A verb's flags, width and precision.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Spec {
    pub(crate) left: bool,
    pub(crate) zero: bool,
    pub(crate) plus: bool,
    pub(crate) width: Option<usize>,
    pub(crate) precision: Option<usize>,
}

fn number(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        n = Some(n.unwrap_or(0) * 10 + d as usize);
        chars.next();
    }
    n
}

fn pad(out: &mut String, text: &str, spec: &Spec) {
    let len = text.chars().count();
    let fill = spec.width.unwrap_or(0).saturating_sub(len);
    if spec.left {
        out.push_str(text);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if spec.zero && text.starts_with(['-', '+']) {
        out.push_str(&text[..1]);
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(&text[1..]);
    } else {
        out.extend(std::iter::repeat_n(if spec.zero { '0' } else { ' ' }, fill));
        out.push_str(text);
    }
}

fn render(verb: char, arg: &Value, spec: &Spec) -> String {
    let sign = |s: String, positive: bool| {
        if spec.plus && positive {
            format!("+{s}")
        } else {
            s
        }
    };
    match (verb, arg) {
        ('v' | 's', Value::String(s)) => match spec.precision {
            Some(p) => s.chars().take(p).collect(),
            None => s.to_string(),
        },
        ('v' | 's', _) => sprint(arg),
        ('d', Value::Int(i)) => sign(i.to_string(), *i >= 0),
        ('d', Value::Uint(u)) => sign(u.to_string(), true),
        ('f' | 'F', Value::Float(_) | Value::Int(_) | Value::Uint(_)) => {
            let f = float(arg);
            sign(format!("{f:.*}", spec.precision.unwrap_or(6)), f >= 0.0)
        }
        ('e', Value::Float(_) | Value::Int(_) | Value::Uint(_)) => {
            let f = float(arg);
            sign(
                go_exponent(format!("{f:.*e}", spec.precision.unwrap_or(6))),
                f >= 0.0,
            )
        }
        ('g', Value::Float(f)) => sign(sprint(&Value::Float(*f)), *f >= 0.0),
        ('q', Value::String(s)) => format!("{:?}", &**s),
        ('t', Value::Bool(b)) => b.to_string(),
        ('x', Value::Int(i)) => format!("{i:x}"),
        ('X', Value::Int(i)) => format!("{i:X}"),
        ('x', Value::String(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
        ('x', Value::Bytes(b)) => b.iter().map(|b| format!("{b:02x}")).collect(),
        _ => format!("%!{verb}({}={})", type_name(arg), sprint(arg)),
    }
}

fn float(v: &Value) -> f64 {
    match *v {
        Value::Float(f) => f,
        Value::Int(i) => i as f64,
        Value::Uint(u) => u as f64,
        _ => 0.0,
    }
}

/// Go writes exponents with a sign and at least two digits (`1.5e+00`).
fn go_exponent(rust: String) -> String {
    match rust.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = exp.strip_prefix('-').map_or(('+', exp), |d| ('-', d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => rust,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::Bytes(_) => "[]uint8",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map",
        Value::Error(_) => "error",
    }
}

/// A value as Go's `%v` (and `fmt.Sprint`) writes it: `<nil>`, `[1 2]`, `map[a:1 b:2]`, floats
/// in their shortest form with an exponent from 1e21 on or below 1e-4.
pub fn sprint(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Uint(u) => u.to_string(),
        Value::Float(f) => go_float(*f),
        Value::String(s) => s.to_string(),
        Value::Bytes(b) => format!("{:?}", b.as_ref()).replace(',', ""),
        Value::List(l) => format!("[{}]", l.iter().map(sprint).collect::<Vec<_>>().join(" ")),
        Value::Map(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{}:{}", sprint(k), sprint(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Value::Error(e) => e.message().to_string(),
    }
}

/// A float as Go's `%v` writes it.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    let magnitude = f.abs();
    if magnitude != 0.0 && !(1e-4..1e21).contains(&magnitude) {
        let text = format!("{f:e}");
        // Rust writes `1e21` and `1.5e-7`; Go writes `1e+21` and `1.5e-07`.
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    format!("{f}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_verbs() {
        let cases: &[(&str, Vec<Value>, &str)] = &[
            ("Hello, World!", vec![], "Hello, World!"),
            (
                "%s is %d years",
                vec!["Ann".into(), Value::Int(7)],
                "Ann is 7 years",
            ),
            (
                "%5d|%-5d|%05d",
                vec![Value::Int(42), Value::Int(42), Value::Int(-42)],
                "   42|42   |-0042",
            ),
            (
                "%.2f %f",
                vec![Value::Float(1.23456), Value::Int(2)],
                "1.23 2.000000",
            ),
            ("%e", vec![Value::Float(1500.0)], "1.500000e+03"),
            (
                "%v %v %v",
                vec![
                    Value::Null,
                    Value::Bool(true),
                    Value::from(vec![Value::Int(1), "a".into()]),
                ],
                "<nil> true [1 a]",
            ),
            (
                "%q %t %x %X",
                vec![
                    "a\"b".into(),
                    Value::Bool(false),
                    Value::Int(255),
                    Value::Int(255),
                ],
                "\"a\\\"b\" false ff FF",
            ),
            ("100%%", vec![], "100%"),
            ("%d", vec![], "%!d(MISSING)"),
            ("%d", vec!["x".into()], "%!d(string=x)"),
            ("%s", vec!["a".into(), Value::Int(1)], "a%!(EXTRA int=1)"),
            ("%v", vec![Value::Map([("k", 1)].into())], "map[k:1]"),
        ];
        for (format, args, want) in cases {
            assert_eq!(sprintf(format, args), *want, "{format}");
        }
    }

    #[test]
    fn sprint_writes_floats_as_go_does() {
        assert_eq!(sprint(&Value::Float(1e21)), "1e+21");
        assert_eq!(sprint(&Value::Float(2.5)), "2.5");
        assert_eq!(sprint(&Value::Float(2.0)), "2");
        assert_eq!(sprint(&Value::Float(1.5e-7)), "1.5e-07");
    }
}
