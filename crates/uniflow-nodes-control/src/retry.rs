//! `retry`: writes a packet to `out` again while its answer is an error, up to `threshold`
//! more times.
//!
//! Each attempt writes the original input to `out` in the same process. The first answer that
//! is not an error is the answer; after `threshold` retries (`threshold + 1` attempts) the last
//! error goes to `error`, whose answer (the error itself when unlinked, as in upstream's later
//! version without the port) is the answer. A threshold of 0 makes one attempt.

use serde::Deserialize;
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, shape};
use uniflow_spec::Diagnostic;

/// The kind name.
pub const KIND: &str = "retry";

/// The fields of a `retry` spec.
#[derive(Debug, Deserialize)]
pub struct RetrySpec {
    /// How many times to retry after the first failure; `limit` is its first upstream name.
    #[serde(default, alias = "limit")]
    pub threshold: u32,
}

impl NodeSpec for RetrySpec {
    const KIND: &'static str = KIND;

    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(RetryNode {
            threshold: self.threshold,
        }))
    }
}

/// The compiled `retry`.
pub struct RetryNode {
    threshold: u32,
}

impl Node for RetryNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        shape::in_port(name)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        shape::out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        if packet.is_none() {
            return Flow::Ready(Packet::None);
        }
        let mut left = self.threshold;
        // A loop rather than a recursion over `Flow::then`, so a large threshold on the ready
        // path costs no stack.
        loop {
            match cx.write(shape::OUT, packet.clone()) {
                Flow::Ready(answer) if !answer.is_error() => return Flow::Ready(answer),
                Flow::Ready(error) if left == 0 => return cx.write(shape::ERROR, error),
                Flow::Ready(_) => left -= 1,
                Flow::Pending(first) => {
                    return Flow::pending(async move {
                        let mut answer = first.await;
                        while answer.is_error() && left > 0 {
                            left -= 1;
                            answer = cx.write(shape::OUT, packet.clone()).await;
                        }
                        if answer.is_error() {
                            return cx.write(shape::ERROR, answer).await;
                        }
                        answer
                    });
                }
            }
        }
    }
}
