//! `assert`: checks what a `test` produced with a CEL condition, and fails the test when it
//! does not hold.
//!
//! Its input is `[payload, index]`, what a `test` writes to `out[1]` (the index is where in the
//! process's frames the payload was found, -1 before any). `expect` runs with the payload as
//! `self`; `true` passes `[payload, index]` on to `out`, `false` is the error
//! `assert failed: <expect>` (to `error`, or as the answer when it is unlinked, which fails
//! the test). With a `target`, the payload checked is instead the first frame of the process,
//! from the index on, at that node and port: what the node got on an input port, what it sent
//! on an output port. No such frame fails the assertion too. Frames are recorded under
//! `uniflow test` and `start --debug` only (see `uniflow_core::agent`).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use uniflow_core::shape::{OneToOne, Transform};
use uniflow_core::{Cx, Registry, agent};
use uniflow_lang::{Languages, Program};
use uniflow_value::{ErrorValue, Value};

use crate::expression;

/// The kind name.
pub const KIND: &str = "assert";

/// The fields of an `assert` spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertSpec {
    /// The condition, CEL with the payload as `self`.
    pub expect: String,
    /// Where the payload to check is taken from, instead of the input.
    #[serde(default)]
    pub target: Option<TargetSpec>,
    /// How long one evaluation may take.
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub timeout: Option<Duration>,
}

/// A node's port, whose first frame an `assert` checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// The node's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The node's id, for a node without a name.
    #[serde(default)]
    pub id: Option<String>,
    /// The port.
    pub port: String,
}

/// The compiled `assert`.
pub struct AssertNode {
    expect: Arc<dyn Program>,
    /// The text of `expect`, for the failure's message.
    text: String,
    /// The node (name, else id) and port of `target`.
    target: Option<(String, String)>,
}

pub(crate) fn register(registry: &mut Registry, languages: Arc<Languages>) {
    registry.add_with(KIND, move |spec: AssertSpec, cx| {
        let mut problems = Vec::new();
        let expect = expression::compile(&languages, &spec.expect, spec.timeout, cx, "expect")
            .map_err(|d| problems.push(d))
            .ok();
        let target = match spec.target {
            None => None,
            Some(TargetSpec { name, id, port }) => match name.or(id) {
                Some(node) => Some((node, port)),
                None => {
                    problems.push(cx.error("target.name", "missing: the node to check"));
                    None
                }
            },
        };
        match expect {
            Some(expect) if problems.is_empty() => Ok(Box::new(OneToOne(AssertNode {
                expect,
                text: spec.expect.trim().to_owned(),
                target,
            }))
                as Box<dyn uniflow_core::Node>),
            _ => Err(problems),
        }
    });
}

impl AssertNode {
    fn failed(&self) -> ErrorValue {
        ErrorValue::new(format!("assert failed: {}", self.text))
    }
}

impl Transform for AssertNode {
    fn transform(&self, cx: &Cx<'_>, input: Value) -> Result<Value, ErrorValue> {
        let (payload, index) = match input.as_list().map(|l| l.as_slice()) {
            Some([payload, index]) if index.as_i64().is_some() => {
                (payload.clone(), index.as_i64().unwrap_or(-1))
            }
            _ => {
                return Err(ErrorValue::new(
                    "assert takes [payload, index], what a test writes to out[1]",
                ));
            }
        };
        let (payload, index) = match &self.target {
            None => (payload, index),
            Some((node, port)) => {
                let from = usize::try_from(index).unwrap_or(0);
                agent::frames(cx.proc())
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, frame)| frame.is_at(node, port))
                    .and_then(|(i, frame)| {
                        let payload = frame.crossing()?.clone().into_value();
                        Some((payload, i64::try_from(i).ok()?))
                    })
                    .ok_or_else(|| {
                        ErrorValue::new(format!(
                            "assert failed: no frame of `{node}` at port `{port}`"
                        ))
                    })?
            }
        };
        match self.expect.run(payload.clone())? {
            Value::Bool(true) => Ok(Value::from(vec![payload, Value::Int(index)])),
            Value::Bool(false) => Err(self.failed()),
            other => Err(ErrorValue::new(format!(
                "assert: `{}` gave {other:?}, not a boolean",
                self.text
            ))),
        }
    }
}
