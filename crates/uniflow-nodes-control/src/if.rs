//! `if`: sends a packet to `out[0]` when a condition holds and to `out[1]` when it does not.
//!
//! The condition (`when`) is an expression with the payload as `self`, compiled once at load.
//! Its result is false when it is null, false, zero, or empty (string, bytes, list, map), as
//! [`Value::is_truthy`] says; upstream panicked on null. A condition that fails sends its error
//! to `error`. Like every node with numbered outputs, a branch whose port does not exist (no
//! link on it or on a higher-numbered `out`) answers `None`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use uniflow_core::shape::indexed::{self, ERROR};
use uniflow_core::{Cx, Flow, InPort, Node, OutPort, Packet, Registry, port};
use uniflow_lang::{Languages, Program};
use uniflow_value::Value;

use crate::expression;

/// The kind name.
pub const KIND: &str = "if";

/// The fields of an `if` spec.
#[derive(Debug, Deserialize)]
pub struct IfSpec {
    /// The condition, with the payload as `self`.
    pub when: String,
    /// How long one evaluation may take; a CEL run that took longer fails (CEL cannot loop,
    /// so it cannot be interrupted, nor run away).
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub timeout: Option<Duration>,
}

const IN: InPort = InPort(0);
const THEN: OutPort = indexed::out(0);
const ELSE: OutPort = indexed::out(1);

/// The compiled `if`.
pub struct IfNode {
    when: Arc<dyn Program>,
}

pub(crate) fn register(registry: &mut Registry, languages: Arc<Languages>) {
    registry.add_with(KIND, move |spec: IfSpec, cx| {
        let when = expression::compile(&languages, &spec.when, spec.timeout, cx, "when")
            .map_err(|d| vec![d])?;
        Ok(Box::new(IfNode { when }))
    });
}

impl Node for IfNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        (name == port::IN).then_some(IN)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        indexed::out_port_below(name, 2)
    }

    #[inline]
    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(input) = packet else {
            return Flow::Ready(Packet::None);
        };
        match self.when.run(input.clone()) {
            Ok(result) => {
                let branch = if result.is_truthy() { THEN } else { ELSE };
                if !cx.port_exists(branch) {
                    return Flow::Ready(Packet::None);
                }
                cx.send(branch, input)
            }
            Err(e) => cx.send(ERROR, Value::Error(e)),
        }
    }
}
