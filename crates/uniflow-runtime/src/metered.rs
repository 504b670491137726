//! Per-node counters: packets handled, errors answered, and how long answers take, for the
//! operator endpoint's `/metrics`. A node is wrapped only when the namespace is metered
//! ([`Options::metered`](crate::Options::metered)), so an unmetered graph pays nothing.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use metrics::{Counter, Histogram};
use uniflow_core::{Cx, Error, Flow, InPort, LoadCx, Needs, Node, OutPort, Packet};
use uniflow_spec::Spec;

/// A node with its counters.
pub(crate) struct Metered {
    node: Box<dyn Node>,
    packets: Counter,
    errors: Counter,
    latency: Histogram,
}

/// Wraps a node compiled from `spec` of `namespace`.
pub(crate) fn wrap(namespace: &str, spec: &Spec, node: Box<dyn Node>) -> Box<dyn Node> {
    let labels = [
        ("namespace", namespace.to_owned()),
        ("node", spec.label(0)),
        ("kind", spec.kind.clone()),
    ];
    Box::new(Metered {
        node,
        packets: metrics::counter!("uniflow_node_packets_total", &labels),
        errors: metrics::counter!("uniflow_node_errors_total", &labels),
        latency: metrics::histogram!("uniflow_node_latency_seconds", &labels),
    })
}

impl Metered {
    fn answered(&self, started: Instant, answer: &Packet) {
        self.latency.record(started.elapsed().as_secs_f64());
        if answer.is_error() {
            self.errors.increment(1);
        }
    }
}

impl Node for Metered {
    fn in_port(&self, name: &str) -> Option<InPort> {
        self.node.in_port(name)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        self.node.out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, port: InPort, packet: Packet) -> Flow<'a> {
        self.packets.increment(1);
        let started = Instant::now();
        match self.node.handle(cx, port, packet) {
            Flow::Ready(answer) => {
                self.answered(started, &answer);
                Flow::Ready(answer)
            }
            Flow::Pending(flow) => Flow::pending(async move {
                let answer = flow.await;
                self.answered(started, &answer);
                answer
            }),
        }
    }

    fn reads_body(&self, port: InPort, method: &str, path: &str) -> bool {
        self.node.reads_body(port, method, path)
    }

    fn needs(&self) -> Needs {
        self.node.needs()
    }

    fn relays_answers(&self) -> bool {
        self.node.relays_answers()
    }

    fn answers_leave(&self) -> bool {
        self.node.answers_leave()
    }

    fn inner(&self) -> Option<&dyn Node> {
        Some(&*self.node)
    }

    fn adopt(&self, previous: &dyn Node) {
        self.node.adopt(previous.inner().unwrap_or(previous));
    }

    fn load(&self, cx: LoadCx) -> Result<(), Error> {
        self.node.load(cx)
    }

    fn moved(&self, cx: LoadCx) {
        self.node.moved(cx);
    }

    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.node.unload()
    }
}
