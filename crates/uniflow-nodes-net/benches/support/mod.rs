//! What the network benchmarks share: a workflow loaded on a free port of 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;

use uniflow_core::{Graph, Registry};
use uniflow_nodes_net::listener::ListenerNode;
use uniflow_spec::{Format, parse};

/// Loads `yaml` (the network kinds and the core's test kinds); the graph and its first
/// listener's address.
pub(crate) async fn start(yaml: &str) -> (Arc<Graph>, SocketAddr) {
    let mut registry = Registry::new();
    uniflow_nodes_net::register(&mut registry);
    uniflow_core::testing::register(&mut registry);
    let specs = parse(yaml, Format::Yaml, None).unwrap_or_else(|d| panic!("{d}"));
    let graph = Graph::compile(specs, &registry, &|_, _| None).unwrap_or_else(|d| panic!("{d}"));
    graph.load().await.expect("graph loads");
    let addr = graph
        .symbols()
        .iter()
        .find_map(|s| s.node.downcast_ref::<ListenerNode>()?.local_addr())
        .expect("a listener");
    (graph, addr)
}
