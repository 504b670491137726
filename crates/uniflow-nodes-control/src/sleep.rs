//! `sleep`: waits `interval`, then writes the packet to `out`.
//!
//! The wait is a timer, not a blocked thread (upstream slept its goroutine), so a sleeping
//! request costs nothing while it waits. A zero interval passes the packet on at once.

use std::time::Duration;

use serde::Deserialize;
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, shape};
use uniflow_spec::Diagnostic;

/// The kind name.
pub const KIND: &str = "sleep";

/// The fields of a `sleep` spec.
#[derive(Debug, Deserialize)]
pub struct SleepSpec {
    /// How long to wait: nanoseconds, or a string such as `"250ms"`.
    #[serde(deserialize_with = "uniflow_spec::duration::option")]
    pub interval: Option<Duration>,
}

impl NodeSpec for SleepSpec {
    const KIND: &'static str = KIND;

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let Some(interval) = self.interval else {
            return Err(vec![cx.error("interval", "missing required field")]);
        };
        Ok(Box::new(SleepNode { interval }))
    }
}

/// The compiled `sleep`.
pub struct SleepNode {
    interval: Duration,
}

impl Node for SleepNode {
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
        if self.interval.is_zero() {
            return cx.write(shape::OUT, packet);
        }
        Flow::pending(async move {
            tokio::time::sleep(self.interval).await;
            cx.write(shape::OUT, packet).await
        })
    }
}
