//! `listener`: an HTTP server (HTTP/1.1 and h2c; HTTP/1.1 and h2 over TLS); each request
//! starts a process.
//!
//! The socket is bound when the graph loads, so a port already in use fails the load with a
//! clear error. Per request: read the body (413 past `body_limit`, 408 past `read_timeout`),
//! decode it if a node that `out` leads to reads it (400 when it does not decode, 413 past
//! `max_fields` or `max_parts`), build the payload, write it to `out`; an error
//! answer is written again to `error` (if linked, its answer replaces the error); the answer
//! becomes the response. The process exits after the response is built, with an error when the
//! status is 400 or more. A panic in a node answers 500 and the server keeps serving; a client
//! that disconnects drops the request's work, and the process exits.
//!
//! Slow clients cannot hold connections: headers must arrive within `header_timeout` (which
//! also closes an HTTP/1 connection that waits that long for its next request), a body within
//! `read_timeout`, and a connection on which nothing moves for `idle_timeout` while no request
//! is in flight is closed (this covers TLS handshakes, h2 and clients that never send a byte).
//! These two are enforced by one sweep over the connections in the accept loop, not by a timer
//! per request or a select per connection: requests only store flags and bump counters.
//!
//! Hyper's connection task is the only task per connection; the graph is entered by a plain
//! call, so a request costs no spawn and no channel. What the graph needs beyond that is
//! learned once at load: a request is offered to a `gateway` for upgrading only when the graph
//! holds one.

mod accept;
mod meters;
mod request;

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Deserializer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use uniflow_core::{
    CompileCx, Cx, Error, Flow, Graph, InPort, LoadCx, Node, NodeId, NodeSpec, OutPort, Packet,
    port,
};
use uniflow_spec::Diagnostic;
use uniflow_value::Value;

use crate::payload::BodyLimits;
use crate::tls;

/// The listen backlog; the kernel caps it at `net.core.somaxconn`. 1024 clients connecting at
/// once must not wait for a SYN retry.
const BACKLOG: i32 = 4096;

const OUT: OutPort = OutPort(0);
const ERROR: OutPort = OutPort(1);

/// The limits a listener applies when its spec sets none.
pub const DEFAULT_LIMITS: Limits = Limits {
    body: BodyLimits {
        bytes: 16 * 1024 * 1024,
        // Go's limits: `url.ParseQuery` takes 10000 fields, `mime/multipart` 1000 parts.
        fields: 10_000,
        parts: 1_000,
    },
    header_timeout: Duration::from_secs(30),
    read_timeout: Duration::from_secs(60),
    idle_timeout: Duration::from_secs(120),
};

/// The fields of a `listener` spec.
#[derive(Debug, Deserialize)]
pub struct ListenerSpec {
    /// Only `http`.
    pub protocol: String,
    /// The address to bind; all interfaces when missing.
    #[serde(default)]
    pub host: Option<String>,
    /// The TCP port; `0` picks a free one (see [`ListenerNode::local_addr`]).
    pub port: u16,
    /// The TLS certificate chain: PEM text, or the path of a PEM file. With `key`, the
    /// listener serves HTTPS (h2 and HTTP/1.1 through ALPN).
    #[serde(default)]
    pub cert: Option<String>,
    /// The TLS private key: PEM text, or the path of a PEM file.
    #[serde(default)]
    pub key: Option<String>,
    /// The largest request body, after decompression: bytes, or a size such as `"16MiB"`;
    /// 16 MiB by default. A larger body answers 413.
    #[serde(default, deserialize_with = "size")]
    pub body_limit: Option<u64>,
    /// The most fields a form body may have (a repeated name counts each time); 10000 by
    /// default. A body with more answers 413.
    #[serde(default)]
    pub max_fields: Option<i64>,
    /// The most parts a multipart body may have, those of multipart files in it included;
    /// 1000 by default. A body with more answers 413.
    #[serde(default)]
    pub max_parts: Option<i64>,
    /// How long a client may take to send a request's headers, counted from when the server
    /// waits for them (so it is also how long an idle HTTP/1 connection stays open); 30s by
    /// default.
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub header_timeout: Option<Duration>,
    /// How long a client may take to send a request's body; 60s by default. A body that does
    /// not arrive in time answers 408.
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub read_timeout: Option<Duration>,
    /// How long a connection may stay silent with no request in flight before it is closed;
    /// 120s by default.
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub idle_timeout: Option<Duration>,
}

/// Parses a size: a number of bytes, or a number with a unit (`B`, `KB`/`KiB`, `MB`/`MiB`,
/// `GB`/`GiB`; decimal and binary as named).
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error as _;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Int(n) if n >= 0 => Ok(Some(n as u64)),
        Value::Uint(n) => Ok(Some(n)),
        Value::String(s) => parse_size(&s).map(Some).map_err(D::Error::custom),
        other => Err(D::Error::custom(format!(
            "expected a size in bytes or a string such as \"16MiB\", got {}",
            other.kind_name()
        ))),
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: use bytes or e.g. \"16MiB\""))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size unit in {text:?}: use B, KB, KiB, MB, MiB, GB or GiB"
            ));
        }
    };
    Ok((number * scale as f64).round() as u64)
}

impl NodeSpec for ListenerSpec {
    const KIND: &'static str = "listener";

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        if self.protocol != "http" {
            problems.push(cx.error(
                "protocol",
                format!("unsupported protocol `{}`: only `http`", self.protocol),
            ));
        }
        let ip = match self.host.as_deref() {
            None | Some("") => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            Some("localhost") => IpAddr::from([127, 0, 0, 1]),
            Some(host) => match host.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => {
                    problems.push(cx.error("host", format!("`{host}` is not an IP address")));
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                }
            },
        };
        let tls = match (self.cert.as_deref(), self.key.as_deref()) {
            (None, None) => None,
            (Some(_), None) => {
                problems.push(cx.error("key", "`cert` is set, so `key` is required"));
                None
            }
            (None, Some(_)) => {
                problems.push(cx.error("cert", "`key` is set, so `cert` is required"));
                None
            }
            (Some(cert), Some(key)) => {
                let certs = tls::certificates(cert).map_err(|e| problems.push(cx.error("cert", e)));
                let key = tls::private_key(key).map_err(|e| problems.push(cx.error("key", e)));
                match (certs, key) {
                    (Ok(certs), Ok(key)) => match tls::server_config(certs, key) {
                        Ok(config) => Some(TlsAcceptor::from(config)),
                        Err(e) => {
                            problems.push(cx.error("key", e));
                            None
                        }
                    },
                    _ => None,
                }
            }
        };
        let mut limits = DEFAULT_LIMITS;
        if let Some(body) = self.body_limit {
            match usize::try_from(body) {
                Ok(0) | Err(_) => problems
                    .push(cx.error("body_limit", format!("{body} is not a usable body size"))),
                Ok(body) => limits.body.bytes = body,
            }
        }
        for (field, given, slot) in [
            ("max_fields", self.max_fields, &mut limits.body.fields),
            ("max_parts", self.max_parts, &mut limits.body.parts),
        ] {
            match given.map(usize::try_from) {
                None => {}
                Some(Ok(n)) if n > 0 => *slot = n,
                Some(_) => problems.push(cx.error(field, "must be a number more than zero")),
            }
        }
        for (field, given, slot) in [
            (
                "header_timeout",
                self.header_timeout,
                &mut limits.header_timeout,
            ),
            ("read_timeout", self.read_timeout, &mut limits.read_timeout),
            ("idle_timeout", self.idle_timeout, &mut limits.idle_timeout),
        ] {
            match given {
                None => {}
                // A zero timeout would close every connection at once.
                Some(d) if d.is_zero() => {
                    problems.push(cx.error(field, "must be more than zero"));
                }
                Some(d) => *slot = d,
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Box::new(ListenerNode {
            name: cx.spec.name.clone().unwrap_or_else(|| cx.label.to_owned()),
            addr: SocketAddr::new(ip, self.port),
            tls,
            limits,
            local_addr: OnceLock::new(),
            socket: Mutex::new(None),
            handed_over: Arc::new(AtomicBool::new(false)),
            running: Mutex::new(None),
        }))
    }
}

/// The limits a listener puts on its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest request body, after decompression, and what decoding it may make.
    pub body: BodyLimits,
    /// How long a request's headers may take.
    pub header_timeout: Duration,
    /// How long a request's body may take.
    pub read_timeout: Duration,
    /// How long a connection may stay silent between requests.
    pub idle_timeout: Duration,
}

/// What the listener's graph needs from it beyond the plain request path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Features {
    /// A node may take the connection over (a `gateway`): requests that ask for an upgrade
    /// are offered to it.
    upgrades: bool,
    /// A node reads the client's address (a `proxy`): it goes into the request's process.
    peers: bool,
    /// A node may leave a streamed response (a `proxy`): an answer may be one.
    streams: bool,
}

impl Features {
    /// What the nodes a listener at `place` can reach ask of it: those of its graph and of the
    /// graphs around it (a listener inside a block).
    fn of(place: &LoadCx) -> Features {
        let needs = place.needs();
        Features {
            upgrades: needs.connection,
            peers: needs.peer,
            streams: needs.streams,
        }
    }
}

/// Where a listener's requests go: its place in the graph that runs now, with what that graph
/// needs of it. A reload that keeps the listener swaps it (see [`Node::moved`]); a request
/// reads it once, when it starts, and finishes on that graph.
struct Served {
    place: LoadCx,
    features: Features,
}

impl Served {
    fn at(place: LoadCx) -> Arc<Served> {
        Arc::new(Served {
            features: Features::of(&place),
            place,
        })
    }
}

/// The compiled `listener`.
pub struct ListenerNode {
    /// Its spec's name, which labels its metrics.
    name: String,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    local_addr: OnceLock<SocketAddr>,
    /// The listening socket, for a new version of this listener on the same address to take
    /// over (see [`Node::adopt`]): before it loads, or after this one stopped, it is the
    /// socket the new one listens on.
    socket: Mutex<Option<std::net::TcpListener>>,
    /// Whether a new version took the socket over: stopping then keeps the connections that
    /// have not sent a request yet until they have.
    handed_over: Arc<AtomicBool>,
    running: Mutex<Option<Running>>,
}

struct Running {
    /// Set when unloading starts; dropped when the one unloading stops waiting.
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    served: Arc<ArcSwap<Served>>,
}

impl ListenerNode {
    /// The address the listener is bound to, once loaded.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr.get().copied()
    }

    /// Whether the listener serves TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The limits the listener applies.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn bind(&self) -> std::io::Result<std::net::TcpListener> {
        let domain = socket2::Domain::for_address(self.addr);
        let socket =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        if self.addr.is_ipv6() {
            // `::` serves IPv4 too, like Go's listener on an empty host.
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&self.addr.into())?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    }

    /// The socket to listen on: the one a previous version handed over, or a new one.
    fn listen(&self) -> std::io::Result<TcpListener> {
        let adopted = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take();
        let socket = match adopted {
            Some(socket) => socket,
            None => self.bind()?,
        };
        // A copy stays with the node, for its next version to take over.
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = Some(socket.try_clone()?);
        TcpListener::from_std(socket)
    }
}

impl Node for ListenerNode {
    fn in_port(&self, _name: &str) -> Option<InPort> {
        None
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        match name {
            port::OUT => Some(OUT),
            port::ERROR => Some(ERROR),
            _ => None,
        }
    }

    fn handle<'a>(&'a self, _cx: Cx<'a>, _port: InPort, _packet: Packet) -> Flow<'a> {
        Flow::Ready(Packet::None)
    }

    /// Its requests' answers are the responses.
    fn answers_leave(&self) -> bool {
        true
    }

    /// A previous version on the same address hands its socket over: the port keeps
    /// listening through the reload, and connections queued meanwhile are accepted here.
    fn adopt(&self, previous: &dyn Node) {
        let Some(previous) = previous.downcast_ref::<ListenerNode>() else {
            return;
        };
        if previous.addr != self.addr {
            return;
        }
        // A copy: should this generation fail to start, the previous version still has the
        // socket to hand to the next attempt.
        let socket = previous
            .socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|s| s.try_clone().ok());
        if socket.is_some() {
            previous.handed_over.store(true, Ordering::Release);
        }
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = socket;
    }

    fn load(&self, cx: LoadCx) -> Result<(), Error> {
        let listener = self
            .listen()
            .map_err(|e| Error::Start(format!("cannot listen on {}: {e}", self.addr)))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::Start(e.to_string()))?;
        let _ = self.local_addr.set(local);
        tracing::info!(address = %local, tls = self.tls.is_some(), "listening");
        let (stop, stopped) = watch::channel(false);
        let served = Arc::new(ArcSwap::new(Served::at(cx)));
        let meters = Arc::new(Meters::new(&self.name));
        let task = tokio::spawn(serve(
            listener,
            Arc::clone(&served),
            meters,
            Arc::clone(&self.handed_over),
            stopped,
        ));
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Running { stop, task, served });
        Ok(())
    }

    /// Its next requests, those of open keep-alive connections included, run on the new
    /// graph.
    fn moved(&self, cx: LoadCx) {
        if let Some(running) = &*self.running.lock().unwrap_or_else(|e| e.into_inner()) {
            running.served.store(Served::at(cx));
        }
    }

    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // Unloaded, it hands nothing over: the port is free once the accept loop stops.
        self.socket.lock().unwrap_or_else(|e| e.into_inner()).take();
        Box::pin(async move {
            if let Some(running) = running {
                let _ = running.stop.send(true);
                let _ = running.task.await;
            }
        })
    }
}

/// The listener node `node` of `graph`.
fn listener_of(graph: &Graph, node: NodeId) -> &ListenerNode {
    graph
        .node(node)
        .downcast_ref::<ListenerNode>()
        .expect("the node that serves is a listener")
}

use accept::*;
use meters::Meters;
pub use request::respond;
use request::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1.5 KB"), Ok(1500));
        assert_eq!(parse_size("2gib"), Ok(2 << 30));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("1 parsec").is_err());
    }
}
