//! `switch`: sends a packet to the port of the first condition that holds.
//!
//! `matches` is a list of `{when, port}`, tried in order; each `when` is an expression with the
//! payload as `self`, compiled once at load. A result of null, false, zero or empty is false
//! ([`Value::is_truthy`]). No match answers `None`; a condition that fails sends its error to
//! `error` and stops the search. A match's port may be any `out[N]`, however many matches
//! there are (upstream panicked past the number of matches); a port that does not exist (no
//! link on it or on a higher-numbered `out`) answers `None`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use uniflow_core::shape::indexed::{self, ERROR, out};
use uniflow_core::{Cx, Flow, InPort, Node, OutPort, Packet, Registry, port};
use uniflow_lang::{Languages, Program};
use uniflow_spec::PortName;
use uniflow_value::Value;

use crate::expression;

/// The kind name.
pub const KIND: &str = "switch";

/// The fields of a `switch` spec.
#[derive(Debug, Deserialize)]
pub struct SwitchSpec {
    /// The conditions and their ports, first match wins.
    pub matches: Vec<MatchSpec>,
    /// How long one evaluation may take; a CEL run that took longer fails (CEL cannot loop,
    /// so it cannot be interrupted, nor run away).
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub timeout: Option<Duration>,
}

/// One condition. Both fields are required; they default to empty only so that one run
/// reports every incomplete match, not just the first.
#[derive(Debug, Deserialize)]
pub struct MatchSpec {
    /// The condition, with the payload as `self`.
    #[serde(default)]
    pub when: String,
    /// The output port, `out[N]` (`out` means `out[0]`).
    #[serde(default)]
    pub port: String,
}

const IN: InPort = InPort(0);
/// The compiled `switch`.
pub struct SwitchNode {
    matches: Vec<(Arc<dyn Program>, OutPort)>,
}

pub(crate) fn register(registry: &mut Registry, languages: Arc<Languages>) {
    registry.add_with(KIND, move |spec: SwitchSpec, cx| {
        let mut problems = Vec::new();
        let mut matches = Vec::with_capacity(spec.matches.len());
        for (i, m) in spec.matches.iter().enumerate() {
            let when = expression::compile(
                &languages,
                &m.when,
                spec.timeout,
                cx,
                &format!("matches[{i}].when"),
            );
            let port = if m.port.is_empty() {
                Err(cx.error(format!("matches[{i}].port"), "missing required field"))
            } else {
                PortName::parse(&m.port)
                    .index_of(port::OUT, true)
                    .map(out)
                    .ok_or_else(|| {
                        cx.error(
                            format!("matches[{i}].port"),
                            format!("`{}` is not an output port `out[N]`", m.port),
                        )
                    })
            };
            match (when, port) {
                (Ok(when), Ok(port)) => matches.push((when, port)),
                (when, port) => problems.extend(when.err().into_iter().chain(port.err())),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Box::new(SwitchNode { matches }))
    });
}

impl Node for SwitchNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        (name == port::IN).then_some(IN)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        indexed::out_port(name)
    }

    #[inline]
    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(input) = packet else {
            return Flow::Ready(Packet::None);
        };
        for (when, port) in &self.matches {
            match when.run(input.clone()) {
                Ok(result) if result.is_truthy() => {
                    if !cx.port_exists(*port) {
                        return Flow::Ready(Packet::None);
                    }
                    return cx.send(*port, input);
                }
                Ok(_) => {}
                Err(e) => return cx.send(ERROR, Value::Error(e)),
            }
        }
        Flow::Ready(Packet::None)
    }
}
