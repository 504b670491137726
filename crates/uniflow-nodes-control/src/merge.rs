//! `merge`: waits for one packet on every input `in[N]` of a process, then writes their merge.
//!
//! Per process, the k-th packet of each input forms one tuple (upstream's read group). A
//! packet that leaves its tuple incomplete is answered `None` at once; the packet that
//! completes it writes the merge of the tuple, in input order whatever the arrival order, to
//! `out` (one input: the value itself; several: a list) and gets `out`'s answer. An error in
//! any input sends their join to `error` instead.
//!
//! The number of inputs is the highest `in[N]` linked, plus one; `in` means `in[0]`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Deserialize;
use uniflow_core::{
    CompileCx, Cx, Flow, InPort, Local, Node, NodeSpec, OutPort, Packet, merge, port,
};
use uniflow_spec::{Diagnostic, PortName};
use uniflow_value::Value;

/// The kind name.
pub const KIND: &str = "merge";

/// The fields of a `merge` spec: none.
#[derive(Debug, Deserialize)]
pub struct MergeSpec {}

impl NodeSpec for MergeSpec {
    const KIND: &'static str = KIND;

    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(MergeNode {
            inputs: AtomicU32::new(0),
            pending: Local::new(),
        }))
    }
}

const OUT: OutPort = OutPort(0);
const ERROR: OutPort = OutPort(1);

/// The compiled `merge`.
pub struct MergeNode {
    /// How many inputs a tuple has. Upstream created input ports as links asked for them; the
    /// graph asks for every linked port while it compiles, so the highest number asked for is
    /// the input count by the time any packet flows.
    inputs: AtomicU32,
    /// Each process's packets waiting for their tuple.
    pending: Local<Tuples>,
}

/// The packets of one process waiting for their tuple to complete, one queue per input.
#[derive(Default)]
struct Tuples {
    queues: Vec<VecDeque<Value>>,
}

impl MergeNode {
    /// Queues `value` on `input`; returns the tuple it completes, if it does.
    fn push(&self, cx: Cx<'_>, input: usize, value: Value) -> Option<Vec<Packet>> {
        let inputs = (self.inputs.load(Ordering::Relaxed) as usize).max(input + 1);
        cx.proc().with_local(&self.pending, |pending| {
            if pending.queues.len() < inputs {
                pending.queues.resize_with(inputs, VecDeque::new);
            }
            pending.queues[input].push_back(value);
            if pending.queues.iter().any(VecDeque::is_empty) {
                return None;
            }
            Some(
                pending
                    .queues
                    .iter_mut()
                    .map(|q| Packet::Data(q.pop_front().expect("checked non-empty")))
                    .collect(),
            )
        })
    }
}

impl Node for MergeNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        let index = PortName::parse(name).index_of(port::IN, true)?;
        let index = u32::try_from(index).ok()?;
        self.inputs
            .fetch_max(index.checked_add(1)?, Ordering::Relaxed);
        Some(InPort(index))
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        match name {
            port::OUT => Some(OUT),
            port::ERROR => Some(ERROR),
            _ => None,
        }
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(value) = packet else {
            return Flow::Ready(Packet::None);
        };
        let Some(tuple) = self.push(cx, port.0 as usize, value) else {
            return Flow::Ready(Packet::None);
        };
        match merge(tuple) {
            error @ Packet::Data(Value::Error(_)) => cx.write(ERROR, error),
            merged => cx.write(OUT, merged),
        }
    }
}
