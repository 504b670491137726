//! Shared test helpers: start a workflow on a free port, and a small raw HTTP/1.1 client
//! (raw, so tests can also send malformed requests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uniflow_core::Graph;
use uniflow_nodes_net::listener::ListenerNode;
use uniflow_spec::Spec;
use uniflow_store::Store;
use uniflow_value::Value;

/// The workspace root, where `examples/` lives.
///
/// Found from the directory cargo names when it runs the tests, not the one baked in at build
/// time: a build cache shared by two checkouts (CI's clone and a developer's) may hold a test
/// binary built in the other one, whose files can differ or be gone.
pub(crate) fn root() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    package.join("../..")
}

/// Compiles and loads `specs` with every kind plus the test kinds, with each listener moved to
/// a free port on 127.0.0.1. Returns the graph and the first listener's address. The system
/// kinds work on an in-memory store of the graph's own, in namespace `default`.
///
/// URLs in the specs that name a listener's port on `localhost` or `127.0.0.1` (a `proxy` or
/// `http` node calling a second listener of the same workflow) follow it to its new port.
pub(crate) async fn start(mut specs: Vec<Spec>) -> (Arc<Graph>, SocketAddr) {
    let mut moved = Vec::new();
    for spec in &mut specs {
        if spec.kind == "listener" {
            let free = free_port();
            if let Some(port) = spec.fields.get("port").and_then(Value::as_i64) {
                moved.push((port, free));
            }
            spec.fields = spec
                .fields
                .insert("port", Value::Int(i64::from(free)))
                .insert("host", "127.0.0.1");
        }
    }
    for spec in &mut specs {
        if spec.kind != "listener" {
            spec.fields = match follow_ports(&Value::Map(spec.fields.clone()), &moved) {
                Value::Map(m) => m,
                _ => unreachable!("a map stays a map"),
            };
        }
    }
    let store = Store::open("mem://").await.expect("an in-memory store");
    let mut registry = uniflow::registry_with_system(&store, "default");
    uniflow_core::testing::register(&mut registry);
    let graph = Graph::compile(specs, &registry, &|_, _| None).unwrap_or_else(|d| panic!("{d}"));
    graph.load().await.expect("graph loads");
    let addr = graph
        .symbols()
        .iter()
        .find_map(|s| s.node.downcast_ref::<ListenerNode>()?.local_addr())
        .expect("a listener is bound");
    (graph, addr)
}

/// Every kind of the binary plus the core's test kinds.
pub(crate) fn registry() -> uniflow_core::Registry {
    let mut registry = uniflow::registry();
    uniflow_core::testing::register(&mut registry);
    registry
}

/// A port free on 127.0.0.1 for the test to give a listener.
///
/// The kernel's own pick (binding port 0) is an ephemeral port, and so is every client
/// connection's local port: with the tests opening thousands of connections, one of them took
/// a port between its pick and the listener's bind (a run failed so). So the ports come from
/// below the ephemeral range (32768 and up by default), numbered per test binary so that two
/// tests never get the same one, and each is checked free when given.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    // Test binaries of two checkouts may run at once: each starts at a place of its own.
    let start = std::process::id() % 97 * 120;
    loop {
        let port = FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT;
        let port = u16::try_from(port).expect("below 32768");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `value` with `localhost:OLD` and `127.0.0.1:OLD` rewritten to `127.0.0.1:NEW` in every
/// string.
fn follow_ports(value: &Value, moved: &[(i64, u16)]) -> Value {
    match value {
        Value::String(s) => {
            let mut text = s.to_string();
            for (old, new) in moved {
                for host in ["localhost", "127.0.0.1"] {
                    text = text.replace(&format!("{host}:{old}"), &format!("127.0.0.1:{new}"));
                }
            }
            Value::from(text)
        }
        Value::List(l) => Value::from(l.iter().map(|v| follow_ports(v, moved)).collect::<Vec<_>>()),
        Value::Map(m) => Value::Map(
            m.iter()
                .map(|(k, v)| (k.clone(), follow_ports(v, moved)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A parsed response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Builds a request with `Connection: close` and a Content-Length for the body.
pub(crate) fn request(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends raw bytes and reads the response until the server closes the connection.
pub(crate) async fn send(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("the server answers within 10s")
        .expect("read");
    parse(&buf)
}

fn parse(buf: &[u8]) -> Reply {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// A `uniflow` process a test started, killed when dropped; its standard error is in `log`.
pub(crate) struct Instance {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Instance {
    /// Spawns `command` with its standard error written to `log`, and waits until each of
    /// `ports` on 127.0.0.1 accepts (at most 30 s).
    pub(crate) async fn spawn(mut command: Command, log: PathBuf, ports: &[u16]) -> Instance {
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("uniflow starts");
        let instance = Instance { child, log };
        for port in ports {
            let deadline = Instant::now() + Duration::from_secs(30);
            while TcpStream::connect(("127.0.0.1", *port)).await.is_err() {
                assert!(
                    Instant::now() < deadline,
                    "uniflow did not listen on {port}:\n{}",
                    instance.log()
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        instance
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An [`Instance`] with the directory it runs in, removed when dropped.
pub(crate) struct Server {
    pub(crate) instance: Instance,
    pub(crate) dir: PathBuf,
}

impl Server {
    pub(crate) fn log(&self) -> String {
        self.instance.log()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:`port` with `headers`: the status and body.
pub(crate) async fn get(port: u16, path: &str, headers: &[(String, String)]) -> (u16, Vec<u8>) {
    let reply = send(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &request("GET", path, headers, b""),
    )
    .await;
    (reply.status, reply.body)
}
