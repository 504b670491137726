//! `reduce`: a running accumulation per process.
//!
//! Each packet evaluates `action` with `self = [acc, current, index]`, where `acc` starts at
//! `init` (null when unset) and `index` counts the process's packets from 0. The result becomes
//! the new `acc` and is written to `out`; a failing action sends its error to `error` and leaves
//! `acc` as it was (the index still advances, as upstream's did). Every packet is answered, one
//! output per input, so a `reduce` inside a `loop` body sees the elements in order.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use uniflow_core::{Cx, Flow, InPort, Local, Node, OutPort, Packet, Registry, shape};
use uniflow_lang::{Languages, Program};
use uniflow_value::Value;

use crate::expression;

/// The kind name.
pub const KIND: &str = "reduce";

/// The fields of a `reduce` spec.
#[derive(Debug, Deserialize)]
pub struct ReduceSpec {
    /// The step, with `self = [acc, current, index]`.
    pub action: String,
    /// The first `acc`; null when unset.
    #[serde(default)]
    pub init: Value,
    /// How long one evaluation may take; a CEL run that took longer fails (CEL cannot loop,
    /// so it cannot be interrupted, nor run away).
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub timeout: Option<Duration>,
}

/// The compiled `reduce`.
pub struct ReduceNode {
    action: Arc<dyn Program>,
    init: Value,
    /// Each process's accumulator.
    state: Local<State>,
}

/// One process's accumulator; `acc` is `None` until the first success.
#[derive(Default)]
struct State {
    acc: Option<Value>,
    index: i64,
}

pub(crate) fn register(registry: &mut Registry, languages: Arc<Languages>) {
    registry.add_with(KIND, move |spec: ReduceSpec, cx| {
        let action = expression::compile(&languages, &spec.action, spec.timeout, cx, "action")
            .map_err(|d| vec![d])?;
        Ok(Box::new(ReduceNode {
            action,
            init: spec.init,
            state: Local::new(),
        }))
    });
}

impl Node for ReduceNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        shape::in_port(name)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        shape::out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(current) = packet else {
            return Flow::Ready(Packet::None);
        };
        // The action is user code, so it runs outside the process lock. No other packet of this
        // process is handled in between: the read, the run and the write are one synchronous
        // call on the process's task.
        let (acc, index) = cx.proc().with_local(&self.state, |state| {
            let index = state.index;
            state.index += 1;
            (
                state.acc.clone().unwrap_or_else(|| self.init.clone()),
                index,
            )
        });
        let args = Value::from(vec![acc, current, Value::Int(index)]);
        match self.action.run(args) {
            Ok(acc) => {
                cx.proc().with_local(&self.state, |state| {
                    state.acc = Some(acc.clone());
                });
                cx.send(shape::OUT, acc)
            }
            Err(e) => cx.send(shape::ERROR, Value::Error(e)),
        }
    }
}
