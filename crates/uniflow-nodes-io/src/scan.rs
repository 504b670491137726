//! `scan`: reads values from a file or the process's stdin by a format of Go's `Fscanf` verbs,
//! and answers them as a list.
//!
//! With `filename`, the payload is the format, and each packet reads on from where the last
//! one stopped; without, it is `[filename, format]` and the file is read from its start. The
//! verbs are upstream's: `%t` (bool), `%b %e %E %f %F %g %G %x %X` (float), `%d %o %O %U`
//! (integer), `%s` (a word), `%c` (one character, as its code); any other is `unsupported
//! value`. As `Fscanf`, a space in the format matches any run of spaces, a newline must meet a
//! newline, other text must meet itself, and the input before a verb's word skips spaces. The
//! format is read by `print`'s code (`format::pieces`). Reading blocks, so it runs on
//! the blocking pool, one reader of a file at a time.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, shape};
use uniflow_spec::Diagnostic;
use uniflow_value::{ErrorValue, Value};

use crate::format::{Piece, pieces};

/// The fields of a `scan` spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSpec {
    /// What to read: a path, or `/dev/stdin` or `stdin`. Without it, each payload names its
    /// own file.
    #[serde(default)]
    pub filename: Option<String>,
}

/// Where a `scan` with a `filename` reads, kept open between packets.
enum Source {
    Stdin,
    File(Mutex<BufReader<File>>),
}

/// The compiled `scan`.
pub struct ScanNode {
    source: Option<Arc<Source>>,
}

fn open(name: &str) -> std::io::Result<Source> {
    Ok(match name {
        "/dev/stdin" | "stdin" => Source::Stdin,
        path => Source::File(Mutex::new(BufReader::new(File::open(path)?))),
    })
}

impl NodeSpec for ScanSpec {
    const KIND: &'static str = "scan";

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let source = match &self.filename {
            None => None,
            Some(name) => Some(Arc::new(open(name).map_err(|e| {
                vec![cx.error("filename", format!("cannot open `{name}`: {e}"))]
            })?)),
        };
        Ok(Box::new(ScanNode { source }))
    }
}

impl Node for ScanNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        shape::in_port(name)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        shape::out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(input) = packet else {
            return Flow::Ready(Packet::None);
        };
        let (source, format) = match (&self.source, input) {
            (Some(source), Value::String(format)) => (Arc::clone(source), format.to_string()),
            (None, Value::List(items)) => match items.as_slice() {
                [Value::String(name), Value::String(format)] => match open(name) {
                    Ok(source) => (Arc::new(source), format.to_string()),
                    Err(e) => {
                        let e = ErrorValue::new(format!("cannot open `{name}`: {e}"));
                        return cx.send(shape::ERROR, Value::Error(e));
                    }
                },
                _ => return cx.send(shape::ERROR, Value::Error(unsupported_type())),
            },
            _ => return cx.send(shape::ERROR, Value::Error(unsupported_type())),
        };
        Flow::pending(async move {
            let read = tokio::task::spawn_blocking(move || match &*source {
                Source::Stdin => scan(&mut std::io::stdin().lock(), &format),
                Source::File(file) => {
                    let mut file = crate::lock(file);
                    scan(&mut *file, &format)
                }
            })
            .await;
            match read {
                Ok(Ok(values)) => cx.send(shape::OUT, Value::from(values)).await,
                Ok(Err(e)) => cx.send(shape::ERROR, Value::Error(e)).await,
                Err(e) => {
                    let e = ErrorValue::new(format!("scan: {e}"));
                    cx.send(shape::ERROR, Value::Error(e)).await
                }
            }
        })
    }
}

fn unsupported_type() -> ErrorValue {
    ErrorValue::new("unsupported type")
}

/// Reads `input` by `format`, as Go's `Fscanf`.
///
/// # Errors
/// An unsupported verb, input that does not match, or a read error.
pub(crate) fn scan(input: &mut impl BufRead, format: &str) -> Result<Vec<Value>, ErrorValue> {
    let mut values = Vec::new();
    let mut input = Input(input);
    let mut pieces = pieces(format).peekable();
    while let Some(piece) = pieces.next() {
        match piece {
            Piece::Text('\n') => {
                input.skip_spaces()?;
                match input.next()? {
                    Some(b'\n') => {}
                    None => return Err(ErrorValue::new("unexpected EOF")),
                    Some(_) => {
                        return Err(ErrorValue::new("newline in format does not match input"));
                    }
                }
            }
            Piece::Text(c) if c.is_whitespace() => {
                while pieces
                    .next_if(|p| matches!(p, Piece::Text(c) if c.is_whitespace() && *c != '\n'))
                    .is_some()
                {}
                input.skip_spaces()?;
            }
            Piece::Text(c) => {
                let mut want = [0u8; 4];
                for &b in c.encode_utf8(&mut want).as_bytes() {
                    if input.next()? != Some(b) {
                        return Err(ErrorValue::new("input does not match format"));
                    }
                }
            }
            Piece::NoVerb => return Err(ErrorValue::new("too few operands for format '%'")),
            Piece::Verb(verb, spec) => values.push(input.value(verb, spec.width)?),
        }
    }
    Ok(values)
}

/// The input, read a byte at a time through its buffer.
struct Input<'a, R: BufRead>(&'a mut R);

impl<R: BufRead> Input<'_, R> {
    fn peek(&mut self) -> Result<Option<u8>, ErrorValue> {
        let buffer = self
            .0
            .fill_buf()
            .map_err(|e| ErrorValue::new(e.to_string()))?;
        Ok(buffer.first().copied())
    }

    fn next(&mut self) -> Result<Option<u8>, ErrorValue> {
        let b = self.peek()?;
        if b.is_some() {
            self.0.consume(1);
        }
        Ok(b)
    }

    /// Skips spaces, not newlines (Fscanf's newlines must match the format's).
    fn skip_spaces(&mut self) -> Result<(), ErrorValue> {
        while matches!(self.peek()?, Some(b' ' | b'\t' | b'\r')) {
            self.0.consume(1);
        }
        Ok(())
    }

    /// The word that starts here (after spaces), at most `width` bytes long.
    fn word(&mut self, width: Option<usize>) -> Result<String, ErrorValue> {
        self.skip_spaces()?;
        let mut word = Vec::new();
        while let Some(b) = self.peek()? {
            if b.is_ascii_whitespace() || width.is_some_and(|w| word.len() >= w) {
                break;
            }
            word.push(b);
            self.0.consume(1);
        }
        if word.is_empty() {
            return Err(ErrorValue::new("unexpected EOF"));
        }
        Ok(String::from_utf8_lossy(&word).into_owned())
    }

    /// The value of one verb.
    fn value(&mut self, verb: char, width: Option<usize>) -> Result<Value, ErrorValue> {
        let expected =
            |what: &str, word: &str| ErrorValue::new(format!("expected {what}, found {word:?}"));
        Ok(match verb {
            't' => {
                let word = self.word(width)?;
                match word.as_str() {
                    "1" | "t" | "T" | "true" | "TRUE" | "True" => Value::Bool(true),
                    "0" | "f" | "F" | "false" | "FALSE" | "False" => Value::Bool(false),
                    _ => return Err(expected("a boolean", &word)),
                }
            }
            'b' | 'e' | 'E' | 'f' | 'F' | 'g' | 'G' | 'x' | 'X' => {
                let word = self.word(width)?;
                let parsed = word.replace('_', "").parse::<f64>().ok().or_else(|| {
                    let (sign, digits) = word
                        .strip_prefix('-')
                        .map_or((1.0, word.as_str()), |d| (-1.0, d));
                    let hex = digits
                        .strip_prefix("0x")
                        .or_else(|| digits.strip_prefix("0X"))?;
                    i64::from_str_radix(hex, 16).ok().map(|n| sign * n as f64)
                });
                Value::Float(parsed.ok_or_else(|| expected("a number", &word))?)
            }
            'd' | 'o' | 'O' | 'U' => {
                let word = self.word(width)?;
                let (negative, digits) = match word.strip_prefix('-') {
                    Some(d) => (true, d),
                    None => (false, word.strip_prefix('+').unwrap_or(&word)),
                };
                let (radix, digits) = match verb {
                    'o' => (8, digits),
                    'O' => (
                        8,
                        digits
                            .strip_prefix("0o")
                            .or_else(|| digits.strip_prefix("0O"))
                            .unwrap_or(digits),
                    ),
                    'U' => (16, digits.strip_prefix("U+").unwrap_or(digits)),
                    _ => (10, digits),
                };
                let n = i64::from_str_radix(&digits.replace('_', ""), radix)
                    .map_err(|_| expected("an integer", &word))?;
                Value::Int(if negative { -n } else { n })
            }
            's' => Value::from(self.word(width)?),
            'c' => {
                let Some(first) = self.next()? else {
                    return Err(ErrorValue::new("unexpected EOF"));
                };
                let len = match first {
                    0xF0.. => 4,
                    0xE0.. => 3,
                    0xC0.. => 2,
                    _ => 1,
                };
                let mut bytes = vec![first];
                for _ in 1..len {
                    bytes.extend(self.next()?);
                }
                let c = String::from_utf8_lossy(&bytes)
                    .chars()
                    .next()
                    .unwrap_or('\u{FFFD}');
                Value::Int(i64::from(u32::from(c)))
            }
            _ => return Err(ErrorValue::new("unsupported value")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(input: &str, format: &str) -> Result<Vec<Value>, String> {
        scan(&mut input.as_bytes(), format).map_err(|e| e.message().to_string())
    }

    #[test]
    fn go_verbs_read_their_values() {
        assert_eq!(
            scanned(
                "ann 42 3.5 true x -0o17 U+1F600 0x1f",
                "%s %d %f %t %c %O %U %x"
            ),
            Ok(vec![
                Value::from("ann"),
                Value::Int(42),
                Value::Float(3.5),
                Value::Bool(true),
                Value::Int(i64::from(b'x')),
                Value::Int(-15),
                Value::Int(0x1F600),
                Value::Float(31.0),
            ])
        );
        assert_eq!(scanned("age=7", "age=%d"), Ok(vec![Value::Int(7)]));
        assert_eq!(
            scanned("  12345", "%3d%d"),
            Ok(vec![Value::Int(123), Value::Int(45)])
        );
        assert_eq!(
            scanned("1\n2", "%d\n%d"),
            Ok(vec![Value::Int(1), Value::Int(2)])
        );
    }

    #[test]
    fn mismatches_are_errors_as_go_words_them() {
        assert_eq!(
            scanned("x", "%d"),
            Err("expected an integer, found \"x\"".to_owned())
        );
        assert_eq!(scanned("", "%s"), Err("unexpected EOF".to_owned()));
        assert_eq!(
            scanned("a=1", "b=%d"),
            Err("input does not match format".to_owned())
        );
        assert_eq!(
            scanned("1 2", "%d\n%d"),
            Err("newline in format does not match input".to_owned())
        );
        assert_eq!(scanned("1", "%q"), Err("unsupported value".to_owned()));
    }

    #[test]
    fn a_file_is_read_on_from_where_the_last_packet_stopped() {
        let dir = std::env::temp_dir().join(format!("uniflow-scan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("in.txt");
        std::fs::write(&path, "1 2\n3 4\n").unwrap();
        let Source::File(file) = open(path.to_str().unwrap()).unwrap() else {
            panic!("a file")
        };
        let mut file = file.lock().unwrap();
        assert_eq!(
            scan(&mut *file, "%d %d\n").unwrap(),
            vec![Value::Int(1), Value::Int(2)]
        );
        assert_eq!(
            scan(&mut *file, "%d %d").unwrap(),
            vec![Value::Int(3), Value::Int(4)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
