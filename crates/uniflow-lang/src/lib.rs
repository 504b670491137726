//! Snippet languages.
//!
//! A [`Language`] compiles code once, at load, into a [`Program`] that runs per packet. The
//! built-in languages are `text` (the code itself), `json` and `yaml` (a constant parsed once),
//! `cel` (an expression over the input, bound to `self`), `javascript` (a module whose default
//! export is called with the input) and `typescript` (the same, types stripped at load). They
//! share one [`Languages`] registry, so `snippet`, `if`, `switch` and the rest never name a
//! language; a node passes its `timeout` in the [`Options`] it compiles with.

mod cel;
mod javascript;
mod typescript;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use uniflow_value::{ErrorValue, Value};

/// Why code did not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No language with this name is registered.
    #[error("unknown language `{name}` (known languages: {known})")]
    UnknownLanguage {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// The code is not valid in its language; the message has the language's own position.
    #[error("invalid {language}: {message}")]
    Syntax {
        /// The language.
        language: String,
        /// The parser's message.
        message: String,
    },
    /// The language's engine could not be started (it ran out of memory while loading, say).
    #[error("cannot start the {language} engine: {message}")]
    Engine {
        /// The language.
        language: String,
        /// What the engine said.
        message: String,
    },
}

/// How a program runs, fixed when it compiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// How long one run may take. A JavaScript run past it is interrupted; a CEL run, which
    /// cannot loop, fails if it took longer. `None` sets no limit.
    pub timeout: Option<Duration>,
}

impl Options {
    /// Options with a timeout (or none).
    pub fn with_timeout(timeout: Option<Duration>) -> Options {
        Options { timeout }
    }
}

/// Compiled code, run once per packet.
pub trait Program: Send + Sync {
    /// Runs the program on one input.
    ///
    /// # Errors
    /// A failure of the program, sent to the node's `error` port.
    fn run(&self, input: Value) -> Result<Value, ErrorValue>;
}

/// A compiler from code to [`Program`]s.
pub trait Language: Send + Sync {
    /// Compiles code; called once per spec load.
    ///
    /// # Errors
    /// A syntax error with the language's message and position.
    fn compile(&self, code: &str, options: &Options) -> Result<Arc<dyn Program>, Error>;
}

/// The languages snippets may use, by name.
#[derive(Clone)]
pub struct Languages {
    by_name: BTreeMap<String, Arc<dyn Language>>,
}

impl Default for Languages {
    /// The built-in languages: `text`, `json`, `yaml`, `cel`, `javascript` and `typescript`.
    fn default() -> Self {
        let mut languages = Languages {
            by_name: BTreeMap::new(),
        };
        languages.add("text", Text);
        languages.add("json", Json);
        languages.add("yaml", Yaml);
        languages.add("cel", cel::Cel);
        languages.add("javascript", javascript::JavaScript);
        languages.add("typescript", typescript::TypeScript);
        languages
    }
}

impl Languages {
    /// Adds (or replaces) a language.
    pub fn add(&mut self, name: &str, language: impl Language + 'static) {
        self.by_name.insert(name.to_owned(), Arc::new(language));
    }

    /// Compiles `code` in the language `name`, with no timeout.
    ///
    /// # Errors
    /// An unknown language or a syntax error.
    pub fn compile(&self, name: &str, code: &str) -> Result<Arc<dyn Program>, Error> {
        self.compile_with(name, code, &Options::default())
    }

    /// Compiles `code` in the language `name` with `options` (a node's `timeout`).
    ///
    /// # Errors
    /// An unknown language or a syntax error.
    pub fn compile_with(
        &self,
        name: &str,
        code: &str,
        options: &Options,
    ) -> Result<Arc<dyn Program>, Error> {
        let language = self
            .by_name
            .get(name)
            .ok_or_else(|| Error::UnknownLanguage {
                name: name.to_owned(),
                known: self.by_name.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        language.compile(code, options)
    }
}

/// A program that ignores its input and answers a constant.
struct Constant(Value);

impl Program for Constant {
    #[inline]
    fn run(&self, _input: Value) -> Result<Value, ErrorValue> {
        // A clone is a reference-count bump: the constant is built once, at load.
        Ok(self.0.clone())
    }
}

/// `text`: the code itself, as a string.
struct Text;

impl Language for Text {
    fn compile(&self, code: &str, _options: &Options) -> Result<Arc<dyn Program>, Error> {
        Ok(Arc::new(Constant(Value::from(code.to_owned()))))
    }
}

/// `json`: the value the code denotes, parsed once.
struct Json;

impl Language for Json {
    fn compile(&self, code: &str, _options: &Options) -> Result<Arc<dyn Program>, Error> {
        let value: Value = serde_json::from_str(code).map_err(|e| Error::Syntax {
            language: "json".into(),
            message: e.to_string(),
        })?;
        Ok(Arc::new(Constant(value)))
    }
}

/// `yaml`: the value the code denotes, parsed once.
struct Yaml;

impl Language for Yaml {
    fn compile(&self, code: &str, _options: &Options) -> Result<Arc<dyn Program>, Error> {
        let value: Value = yaml_serde::from_str(code).map_err(|e| Error::Syntax {
            language: "yaml".into(),
            message: e.to_string(),
        })?;
        Ok(Arc::new(Constant(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(language: &str, code: &str) -> Value {
        Languages::default()
            .compile(language, code)
            .unwrap()
            .run(Value::Null)
            .unwrap()
    }

    #[test]
    fn constants() {
        assert_eq!(run("text", "pong"), Value::from("pong"));
        let json = run("json", r#"{"a": 1, "b": [1.5]}"#);
        assert_eq!(json.get("a"), Some(&Value::Int(1)));
        assert_eq!(
            run("yaml", "a: 1\nb: [x, y]")
                .get("b")
                .unwrap()
                .as_list()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(run("json", "{}"), Value::Map(uniflow_value::Map::new()));
    }

    #[test]
    fn errors_name_the_language_and_position() {
        let err = Languages::default()
            .compile("json", "{\"a\": }")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("invalid json:") && err.contains("line 1 column 7"),
            "{err}"
        );
        let err = Languages::default()
            .compile("lua", "x")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "unknown language `lua` (known languages: cel, javascript, json, text, typescript, yaml)"
        );
    }
}
