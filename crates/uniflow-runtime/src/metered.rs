//! Per-node counters: packets handled, errors answered, and how long answers take, for the
//! operator endpoint's `/metrics`. A node is wrapped only when the namespace is metered
//! ([`Options::metered`](crate::Options::metered)), so an unmetered graph pays nothing.

use std::time::Instant;

use metrics::{Counter, Histogram};
use uniflow_core::{Cx, Flow, InPort, Node, Packet};
use uniflow_spec::Spec;

use crate::observed::{Observed, Observer};

/// The counters of one node.
pub(crate) struct Meters {
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
    Box::new(Observed {
        node,
        observer: Meters {
            packets: metrics::counter!("uniflow_node_packets_total", &labels),
            errors: metrics::counter!("uniflow_node_errors_total", &labels),
            latency: metrics::histogram!("uniflow_node_latency_seconds", &labels),
        },
    })
}

impl Meters {
    fn answered(&self, started: Instant, answer: &Packet) {
        self.latency.record(started.elapsed().as_secs_f64());
        if answer.is_error() {
            self.errors.increment(1);
        }
    }
}

impl Observer for Meters {
    fn handle<'a>(
        &'a self,
        node: &'a dyn Node,
        cx: Cx<'a>,
        port: InPort,
        packet: Packet,
    ) -> Flow<'a> {
        self.packets.increment(1);
        let started = Instant::now();
        node.handle(cx, port, packet).map(move |answer| {
            self.answered(started, &answer);
            answer
        })
    }
}
