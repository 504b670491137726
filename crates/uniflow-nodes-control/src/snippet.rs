//! `snippet`: runs code in a language of the registry on each packet.
//!
//! The code compiles once, at load; a syntax error fails the spec with the language's message.
//! The result goes to `out`, a failure to `error`. The `timeout` is handed to the language at
//! compile time: JavaScript and TypeScript interrupt a run that exceeds it, CEL fails it.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use uniflow_core::shape::{OneToOne, Transform};
use uniflow_core::{Cx, Registry};
use uniflow_lang::{Languages, Options, Program};
use uniflow_value::{ErrorValue, Value};

/// The kind name.
pub const KIND: &str = "snippet";

/// The fields of a `snippet` spec.
#[derive(Debug, Deserialize)]
pub struct SnippetSpec {
    /// The language: `text`, `json`, `yaml`, `cel`, `javascript` or `typescript`.
    pub language: String,
    /// The code.
    pub code: String,
    /// How long one run may take; scripting languages interrupt a run past it. Defaults to
    /// [`DEFAULT_TIMEOUT`].
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub timeout: Option<Duration>,
}

/// The timeout of a snippet that sets none. A script that loops forever would otherwise hold a
/// runtime worker thread for good (upstream had no default); half a minute is far beyond any
/// sane per-request script and still frees the thread.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The compiled `snippet`.
pub struct SnippetNode {
    program: Arc<dyn Program>,
}

impl Transform for SnippetNode {
    #[inline]
    fn transform(&self, _cx: &Cx<'_>, input: Value) -> Result<Value, ErrorValue> {
        self.program.run(input)
    }
}

pub(crate) fn register(registry: &mut Registry, languages: Arc<Languages>) {
    registry.add_with(KIND, move |spec: SnippetSpec, cx| {
        let options = Options::with_timeout(Some(spec.timeout.unwrap_or(DEFAULT_TIMEOUT)));
        let program = languages
            .compile_with(&spec.language, &spec.code, &options)
            .map_err(|e| {
                vec![cx.error(
                    if matches!(e, uniflow_lang::Error::UnknownLanguage { .. }) {
                        "language"
                    } else {
                        "code"
                    },
                    e.to_string(),
                )]
            })?;
        Ok(Box::new(OneToOne(SnippetNode { program })))
    });
}

#[cfg(test)]
mod tests {
    use uniflow_core::{Cx, Graph, Packet, Process};
    use uniflow_spec::{Format, parse};

    use super::*;

    fn registry() -> Registry {
        let mut r = Registry::new();
        crate::register(&mut r, Arc::new(Languages::default()));
        uniflow_core::testing::register(&mut r);
        r
    }

    #[tokio::test]
    async fn snippet_answers_its_constant_and_nop_answers_none() {
        let specs = parse(
            "- {kind: snippet, name: s, language: yaml, code: 'a: 1'}\n- {kind: nop, name: n}\n",
            Format::Yaml,
            None,
        )
        .unwrap();
        let graph = Graph::compile(specs, &registry(), &|_, _| None).unwrap();
        let proc = Process::new();
        for (name, want) in [
            ("s", Packet::Data(Value::Map([("a", 1)].into()))),
            ("n", Packet::None),
        ] {
            let id = graph.find(name).unwrap();
            let answer = graph
                .node(id)
                .handle(
                    Cx::new(&graph, &proc, id),
                    uniflow_core::shape::IN,
                    Packet::Data(Value::Null),
                )
                .await;
            assert_eq!(answer, want, "{name}");
        }
    }

    #[tokio::test]
    async fn scripts_get_the_payload_and_a_runaway_one_is_stopped_by_its_timeout() {
        let specs = parse(
            r#"
- {kind: snippet, name: js, language: javascript, code: 'export default function (a) { return a.n * 10; }'}
- {kind: snippet, name: ts, language: typescript, code: 'export default (a: {n: number}): number => a.n + 0.5'}
- {kind: snippet, name: cel, language: cel, code: 'self.n + 1'}
- {kind: snippet, name: spin, language: javascript, timeout: 50ms, code: 'export default function () { for (;;) {} }'}
"#,
            Format::Yaml,
            None,
        )
        .unwrap();
        let graph = Graph::compile(specs, &registry(), &|_, _| None).unwrap();
        let proc = Process::new();
        let input = Value::Map([("n", 2)].into());
        for (name, want) in [
            ("js", Ok(Value::Int(20))),
            ("ts", Ok(Value::Float(2.5))),
            ("cel", Ok(Value::Int(3))),
            ("spin", Err("javascript run exceeded its timeout of 50ms")),
        ] {
            let id = graph.find(name).unwrap();
            let answer = graph
                .node(id)
                .handle(
                    Cx::new(&graph, &proc, id),
                    uniflow_core::shape::IN,
                    Packet::Data(input.clone()),
                )
                .await;
            match (answer, want) {
                (Packet::Data(Value::Error(e)), Err(message)) => {
                    assert_eq!(&**e.message(), message, "{name}");
                }
                (answer, Ok(value)) => assert_eq!(answer, Packet::Data(value), "{name}"),
                (answer, Err(_)) => panic!("{name}: expected an error, got {answer:?}"),
            }
        }
    }

    #[test]
    fn bad_code_and_language_fail_the_spec_with_their_field() {
        let specs = parse(
            "- {kind: snippet, name: a, language: json, code: '{'}\n- {kind: snippet, name: b, language: lua, code: x}\n- {kind: snippet, name: c, language: text}\n",
            Format::Yaml,
            None,
        )
        .unwrap();
        let text = Graph::compile(specs, &registry(), &|_, _| None)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("spec `a` field `code`: invalid json: EOF while parsing"),
            "{text}"
        );
        assert!(
            text.contains("spec `b` field `language`: unknown language `lua`"),
            "{text}"
        );
        assert!(
            text.contains("spec `c` field `code`: missing required field"),
            "{text}"
        );
    }
}
