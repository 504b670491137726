//! Starting workflows on free ports, and raw sockets for clients that misbehave on purpose.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uniflow_core::{Graph, Registry};
use uniflow_nodes_net::listener::ListenerNode;
use uniflow_spec::{Format, parse};

/// The network kinds plus the core's test kinds.
pub(crate) fn registry() -> Registry {
    let mut registry = Registry::new();
    uniflow_nodes_net::register(&mut registry);
    // Composites (`block`) too, to test the network nodes inside them.
    uniflow_nodes_control::register(
        &mut registry,
        std::sync::Arc::new(uniflow_lang::Languages::default()),
    );
    uniflow_core::testing::register(&mut registry);
    registry
}

/// A loaded workflow and the addresses of its listeners, in spec order.
pub(crate) struct Running {
    pub(crate) graph: Arc<Graph>,
    pub(crate) addrs: Vec<SocketAddr>,
}

impl Running {
    /// The first listener's `http://` base URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addrs[0])
    }

    pub(crate) async fn stop(self) {
        self.graph.unload().await;
    }
}

/// Compiles and loads YAML specs whose listeners say `port: 0` and `host: 127.0.0.1`.
pub(crate) async fn start(yaml: &str) -> Running {
    let specs = parse(yaml, Format::Yaml, None).unwrap_or_else(|d| panic!("{d}"));
    let graph = Graph::compile(specs, &registry(), &|_, _| None).unwrap_or_else(|d| panic!("{d}"));
    graph.load().await.expect("graph loads");
    let addrs = graph
        .symbols()
        .iter()
        .filter_map(|s| s.node.downcast_ref::<ListenerNode>()?.local_addr())
        .collect();
    Running { graph, addrs }
}

/// The problems compiling `yaml` reports, as text.
pub(crate) fn problems(yaml: &str) -> String {
    let specs = parse(yaml, Format::Yaml, None).unwrap_or_else(|d| panic!("{d}"));
    match Graph::compile(specs, &registry(), &|_, _| None) {
        Ok(_) => panic!("the specs compiled"),
        Err(d) => d.to_string(),
    }
}

/// A plain HTTP client that does not use a proxy from the environment.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// Reads from `stream` until the server closes it, for at most `limit`; the bytes read, or
/// `None` when the server kept the connection open past `limit`.
pub(crate) async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut buf)).await {
        Ok(_) => Some(buf),
        Err(_) => None,
    }
}

/// Connects and writes `bytes`.
pub(crate) async fn connect_and_send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}
