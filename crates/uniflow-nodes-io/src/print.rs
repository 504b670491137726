//! `print`: writes a formatted payload to a file or the process's stdout/stderr.
//!
//! With `filename`, the payload is a format string, or a list `[format, args...]`; without, it
//! is `[filename, format, args...]`. Formats use Go's verbs (see [`crate::format`]), as
//! upstream's did. The answer is the number of bytes written; any other payload answers the
//! error `unsupported type`, which upstream's `examples/system.yaml` turns into a 400.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

use serde::Deserialize;
use uniflow_core::shape::{OneToOne, Transform};
use uniflow_core::{CompileCx, Cx, Node, NodeSpec};
use uniflow_spec::Diagnostic;
use uniflow_value::{ErrorValue, Value};

use crate::format::sprintf;

/// The fields of a `print` spec.
#[derive(Debug, Deserialize)]
pub struct PrintSpec {
    /// Where to write: a path (opened to append, created if missing), or `/dev/stdout`,
    /// `stdout`, `/dev/stderr`, `stderr`. Without it, each payload names its file.
    #[serde(default)]
    pub filename: Option<String>,
}

/// The compiled `print`.
pub struct PrintNode {
    sink: Option<Sink>,
}

enum Sink {
    Stdout,
    Stderr,
    // Writes to one file from many requests are serialised by this lock, as they must be for
    // the lines not to interleave; only flows that print pay for it.
    File(Mutex<File>),
}

impl Sink {
    fn open(name: &str) -> std::io::Result<Sink> {
        Ok(match name {
            "/dev/stdout" | "stdout" => Sink::Stdout,
            "/dev/stderr" | "stderr" => Sink::Stderr,
            path => Sink::File(Mutex::new(
                OpenOptions::new().append(true).create(true).open(path)?,
            )),
        })
    }

    fn write(&self, text: &str) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()
            }
            Sink::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
            Sink::File(file) => crate::lock(file).write_all(text.as_bytes()),
        }
    }
}

impl NodeSpec for PrintSpec {
    const KIND: &'static str = "print";

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let sink =
            match &self.filename {
                None => None,
                Some(name) => Some(Sink::open(name).map_err(|e| {
                    vec![cx.error("filename", format!("cannot open `{name}`: {e}"))]
                })?),
            };
        Ok(Box::new(OneToOne(PrintNode { sink })))
    }
}

fn unsupported() -> ErrorValue {
    ErrorValue::new("unsupported type")
}

impl Transform for PrintNode {
    fn transform(&self, _cx: &Cx<'_>, input: Value) -> Result<Value, ErrorValue> {
        let items: Vec<Value> = match input {
            Value::List(l) => l.to_vec(),
            single @ Value::String(_) if self.sink.is_some() => vec![single],
            _ => return Err(unsupported()),
        };
        let (opened, rest) = match &self.sink {
            Some(_) => (None, &items[..]),
            None => {
                let Some(Value::String(name)) = items.first() else {
                    return Err(unsupported());
                };
                let sink = Sink::open(name)
                    .map_err(|e| ErrorValue::new(format!("cannot open `{name}`: {e}")))?;
                (Some(sink), &items[1..])
            }
        };
        let Some((Value::String(format), args)) = rest.split_first() else {
            return Err(unsupported());
        };
        let text = sprintf(format, args);
        let sink = opened
            .as_ref()
            .or(self.sink.as_ref())
            .expect("a sink is open");
        sink.write(&text)
            .map_err(|e| ErrorValue::new(e.to_string()))?;
        Ok(Value::from(text.len()))
    }
}

#[cfg(test)]
mod tests {
    use uniflow_core::{Cx, Graph, Packet, Registry, shape};
    use uniflow_spec::{Format, parse};

    use super::*;

    async fn print(yaml: &str, input: Value) -> Packet {
        let mut r = Registry::new();
        crate::register(&mut r);
        let graph =
            Graph::compile(parse(yaml, Format::Yaml, None).unwrap(), &r, &|_, _| None).unwrap();
        let proc = uniflow_core::Process::new();
        let id = graph.find("p").unwrap();
        graph
            .node(id)
            .handle(Cx::new(&graph, &proc, id), shape::IN, Packet::Data(input))
            .await
    }

    #[tokio::test]
    async fn prints_formats_to_files_and_counts_bytes() {
        let dir = std::env::temp_dir().join(format!("uniflow-print-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.txt");
        let _ = std::fs::remove_file(&path);
        let yaml = format!(
            "- {{kind: print, name: p, filename: '{}'}}\n",
            path.display()
        );
        assert_eq!(
            print(&yaml, Value::from("a\n")).await,
            Packet::Data(Value::Int(2))
        );
        let args = Value::from(vec![
            Value::from("%s=%d\n"),
            Value::from("n"),
            Value::Int(5),
        ]);
        assert_eq!(print(&yaml, args).await, Packet::Data(Value::Int(4)));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nn=5\n");
        let dynamic = Value::from(vec![
            Value::from(path.display().to_string()),
            Value::from("%v"),
            Value::Bool(true),
        ]);
        assert_eq!(
            print("- {kind: print, name: p}\n", dynamic).await,
            Packet::Data(Value::Int(4))
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nn=5\ntrue");
    }

    #[tokio::test]
    async fn other_payloads_are_unsupported_types() {
        let yaml = "- {kind: print, name: p, filename: /dev/null}\n";
        for input in [
            Value::Map([("a", 1)].into()),
            Value::Int(1),
            Value::from(vec![Value::Int(1)]),
        ] {
            let answer = print(yaml, input).await;
            let message = answer
                .value()
                .and_then(Value::as_error)
                .map(|e| e.message().to_string());
            assert_eq!(message.as_deref(), Some("unsupported type"));
        }
        let answer = print("- {kind: print, name: p}\n", Value::from("no file")).await;
        assert!(answer.is_error());
    }

    #[test]
    fn an_unopenable_file_fails_the_spec() {
        let mut r = Registry::new();
        crate::register(&mut r);
        let specs = parse(
            "- {kind: print, name: p, filename: /nonexistent/dir/x}\n",
            Format::Yaml,
            None,
        )
        .unwrap();
        let err = Graph::compile(specs, &r, &|_, _| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec `p` field `filename`: cannot open `/nonexistent/dir/x`"),
            "{err}"
        );
    }
}
