//! `fork`: runs the rest of the flow in a child process and answers `None` at once.
//!
//! The input is written to `out` in a child of the current process, on a task of its own: the
//! one place where this crate spawns, because the work really does outlive the answer. When the
//! child's answer is an error it goes to `error` (in the child); then the child waits for its
//! own children and exits, with the error if one is left.

use serde::Deserialize;
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, port};
use uniflow_spec::Diagnostic;
use uniflow_value::Value;

/// The kind name.
pub const KIND: &str = "fork";

/// The fields of a `fork` spec: none.
#[derive(Debug, Deserialize)]
pub struct ForkSpec {}

impl NodeSpec for ForkSpec {
    const KIND: &'static str = KIND;

    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(ForkNode))
    }
}

const IN: InPort = InPort(0);
const OUT: OutPort = OutPort(0);
const ERROR: OutPort = OutPort(1);

/// The compiled `fork`.
pub struct ForkNode;

impl Node for ForkNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        (name == port::IN).then_some(IN)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        match name {
            port::OUT => Some(OUT),
            port::ERROR => Some(ERROR),
            _ => None,
        }
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        if packet.is_none() {
            return Flow::Ready(Packet::None);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Flow::Ready(Packet::error("fork needs a tokio runtime to run its child"));
        };
        let child = cx.proc().fork();
        let place = cx.detach();
        // The task owns what it touches (the node's place, the child process), so it may
        // outlive the request; a panic inside drops the child, whose `Drop` exits it with an
        // error.
        runtime.spawn(async move {
            let answer = place
                .run(&child, move |cx| {
                    cx.write(OUT, packet).then(move |answer| {
                        if answer.value().and_then(Value::as_error).is_some() && cx.is_linked(ERROR)
                        {
                            cx.write(ERROR, answer)
                        } else {
                            Flow::Ready(answer)
                        }
                    })
                })
                .await;
            let error = answer.value().and_then(Value::as_error).cloned();
            child.join().await;
            child.exit(error);
        });
        Flow::Ready(Packet::None)
    }
}
