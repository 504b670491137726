//! `listener`: an HTTP server (HTTP/1.1 and h2c; HTTP/1.1 and h2 over TLS); each request
//! starts a process.
//!
//! The socket is bound when the graph loads, so a port already in use fails the load with a
//! clear error. Per request: read the body (413 past `body_limit`, 408 past `read_timeout`),
//! decode it (400 when it does not decode), build the payload, write it to `out`; an error
//! answer is written again to `error` (if linked, its answer replaces the error); the answer
//! becomes the response. The process exits after the response is built, with an error when the
//! status is 400 or more. A panic in a node answers 500 and the server keeps serving; a client
//! that disconnects drops the request's work, and the process exits.
//!
//! Slow clients cannot hold connections: headers must arrive within `header_timeout` (which
//! also closes an HTTP/1 connection that waits that long for its next request), a body within
//! `read_timeout`, and a connection on which nothing moves for `idle_timeout` while no request
//! is in flight is closed (this covers TLS handshakes, h2 and clients that never send a byte).
//!
//! Hyper's connection task is the only task per connection; the graph is entered by a plain
//! call, so a request costs no spawn and no channel. What the graph needs beyond that is
//! learned once at load: a request is offered to a `gateway` for upgrading only when the graph
//! holds one.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use serde::{Deserialize, Deserializer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use uniflow_core::{
    CompileCx, Cx, Error, Flow, Graph, InPort, LoadCx, Node, NodeId, NodeSpec, OutPort, Packet,
    Process, port,
};
use uniflow_spec::Diagnostic;
use uniflow_value::{ErrorValue, Value};

use crate::payload::{
    Body, Negotiation, decode_negotiated, header_map_noting, payload_with_header, response,
    text_response,
};
use crate::{tls, upgrade};

/// The listen backlog; the kernel caps it at `net.core.somaxconn`. 1024 clients connecting at
/// once must not wait for a SYN retry.
const BACKLOG: i32 = 4096;
/// How long unloading waits for in-flight requests before dropping them.
const DRAIN: Duration = Duration::from_secs(10);

const OUT: OutPort = OutPort(0);
const ERROR: OutPort = OutPort(1);

/// The limits a listener applies when its spec sets none.
pub const DEFAULT_LIMITS: Limits = Limits {
    body: 16 * 1024 * 1024,
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
                Ok(body) => limits.body = body,
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
            addr: SocketAddr::new(ip, self.port),
            tls,
            limits,
            features: OnceLock::new(),
            local_addr: OnceLock::new(),
            running: Mutex::new(None),
        }))
    }
}

/// The limits a listener puts on its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest request body, after decompression.
    pub body: usize,
    /// How long a request's headers may take.
    pub header_timeout: Duration,
    /// How long a request's body may take.
    pub read_timeout: Duration,
    /// How long a connection may stay silent between requests.
    pub idle_timeout: Duration,
}

/// What the listener's graph needs from it beyond the plain request path, learned at load.
#[derive(Debug, Default, Clone, Copy)]
struct Features {
    /// The graph holds a `gateway`: requests that ask for an upgrade are offered to it.
    upgrades: bool,
    /// The graph holds a `proxy`: the client's address goes into the request's process, for
    /// `X-Forwarded-For`.
    peers: bool,
    /// Some `proxy` passes upstream bodies through: an answer may be a streamed response.
    streams: bool,
}

impl Features {
    fn of(graph: &Graph) -> Features {
        let has = |f: fn(&dyn Node) -> bool| graph.symbols().iter().any(|s| f(&*s.node));
        Features {
            upgrades: has(|n| n.as_any().is::<crate::gateway::GatewayNode>()),
            peers: has(|n| n.as_any().is::<crate::proxy::ProxyNode>()),
            streams: crate::proxy::allow_streaming(graph),
        }
    }
}

/// The client of the request a process serves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    /// The client's address.
    pub(crate) addr: SocketAddr,
    /// Whether the listener serves TLS.
    pub(crate) tls: bool,
}

/// The process-local key of the [`Peer`]: the address of a static.
static PEER: u8 = 0;

fn peer_key() -> usize {
    std::ptr::addr_of!(PEER) as usize
}

/// The client of the request that `proc` (or an ancestor) serves, when the listener recorded
/// it (it does when its graph holds a `proxy`).
pub(crate) fn peer(proc: &Arc<Process>) -> Option<Peer> {
    let mut current = Some(proc);
    while let Some(p) = current {
        if let Some(peer) = p.with_local::<Option<Peer>, _>(peer_key(), |p| *p) {
            return Some(peer);
        }
        current = p.parent();
    }
    None
}

/// The compiled `listener`.
pub struct ListenerNode {
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    features: OnceLock<Features>,
    local_addr: OnceLock<SocketAddr>,
    running: Mutex<Option<Running>>,
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
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

    fn features(&self) -> Features {
        self.features.get().copied().unwrap_or_default()
    }

    fn bind(&self) -> std::io::Result<TcpListener> {
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
        TcpListener::from_std(socket.into())
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

    fn load(&self, cx: LoadCx) -> Result<(), Error> {
        let _ = self.features.set(Features::of(&cx.graph));
        let listener = self
            .bind()
            .map_err(|e| Error::Start(format!("cannot listen on {}: {e}", self.addr)))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::Start(e.to_string()))?;
        let _ = self.local_addr.set(local);
        tracing::info!(address = %local, tls = self.tls.is_some(), "listening");
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, cx.graph, cx.node, stopped));
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running { stop, task });
        Ok(())
    }

    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        Box::pin(async move {
            if let Some(running) = running {
                let _ = running.stop.send(true);
                let _ = running.task.await;
            }
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The listener node `node` of `graph`.
fn listener_of(graph: &Graph, node: NodeId) -> &ListenerNode {
    graph
        .node(node)
        .as_any()
        .downcast_ref::<ListenerNode>()
        .expect("the node that serves is a listener")
}

/// The accept loop: one task per connection, each tracked so that unloading can wait for
/// them (bounded by `DRAIN`).
async fn serve(
    listener: TcpListener,
    graph: Arc<Graph>,
    node: NodeId,
    mut stopped: watch::Receiver<bool>,
) {
    let this = listener_of(&graph, node);
    let limits = this.limits;
    let tls = this.tls.clone();
    let upgrades = this.features().upgrades;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    // Every connection task holds a receiver; unloading waits until all are dropped.
    let (open, tracked) = watch::channel(());
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Running out of file descriptors must not spin the loop.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            graph: Arc::clone(&graph),
            node,
            peer: Peer {
                addr: remote,
                tls: tls.is_some(),
            },
            builder: Arc::clone(&builder),
            limits,
            upgrades,
            stopped: stopped.clone(),
            _tracked: tracked.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let activity = Arc::new(Activity::default());
            let io = Watched {
                inner: stream,
                activity: Arc::clone(&activity),
            };
            match tls {
                None => conn.run(io, activity).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await;
                    match handshake {
                        Ok(Ok(io)) => conn.run(io, activity).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    drop(tracked);
    if tokio::time::timeout(DRAIN, open.closed()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within {DRAIN:?}; dropping them");
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    graph: Arc<Graph>,
    node: NodeId,
    peer: Peer,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
    upgrades: bool,
    stopped: watch::Receiver<bool>,
    _tracked: watch::Receiver<()>,
}

impl Connection {
    async fn run<I>(self, io: I, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let graph = Arc::clone(&self.graph);
        let node = self.node;
        let peer = self.peer;
        let in_flight = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |req| {
            let graph = Arc::clone(&graph);
            let busy = InFlight::start(&in_flight);
            async move {
                let response = handle(&graph, node, peer, req).await;
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        });
        let io = TokioIo::new(io);
        if self.upgrades {
            let conn = self.builder.serve_connection_with_upgrades(io, service);
            drive(conn, self.stopped, &activity, self.limits.idle_timeout).await;
        } else {
            let conn = self.builder.serve_connection(io, service);
            drive(conn, self.stopped, &activity, self.limits.idle_timeout).await;
        }
    }
}

/// Runs a connection until it ends; shuts it down gracefully when the listener stops or when
/// it has been idle (no bytes moved, no request in flight) for a whole `idle` period.
async fn drive<C>(conn: C, mut stopped: watch::Receiver<bool>, activity: &Activity, idle: Duration)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stopped.changed(), if !closing => {
                if changed.is_ok() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = ticks.tick(), if !closing => {
                let moved = activity.moved.swap(false, Ordering::Relaxed);
                if !moved && activity.in_flight.load(Ordering::Relaxed) == 0 {
                    tracing::debug!("closing a connection idle for {idle:?}");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// What a connection has done lately, for the idle check.
#[derive(Default)]
struct Activity {
    /// Bytes moved since the last check.
    moved: AtomicBool,
    /// Requests being answered.
    in_flight: AtomicUsize,
}

/// Counts a request as in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records that bytes moved.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.moved.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.moved.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.moved.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Assert that the stream types used above stay `Unpin` (the wrapper relies on it).
const _: fn() = || {
    fn unpin<T: Unpin>() {}
    unpin::<Watched<TcpStream>>();
    unpin::<tokio_rustls::server::TlsStream<Watched<TcpStream>>>();
};

/// Exits the process if the request's future is dropped before it finishes (the client went
/// away), so hooks and per-process state are released.
struct ExitGuard(Option<Arc<Process>>);

impl ExitGuard {
    fn proc(&self) -> &Arc<Process> {
        self.0
            .as_ref()
            .expect("the guard holds its process until finished")
    }

    /// Ends the request's process: at once, or, when forked children still run, once they
    /// have finished (upstream joined children before exiting). The response does not wait
    /// for them; only flows that fork pay for the task that waits.
    fn finish(mut self, error: Option<ErrorValue>) {
        let proc = self.0.take().expect("finished once");
        if proc.has_children() {
            tokio::spawn(async move {
                proc.join().await;
                proc.exit(error);
            });
        } else {
            proc.exit(error);
        }
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if let Some(proc) = self.0.take() {
            proc.exit(Some(ErrorValue::new("request canceled")));
        }
    }
}

/// Serves one request: reads the body within the limits, then [`respond`].
async fn handle(
    graph: &Arc<Graph>,
    node: NodeId,
    peer: Peer,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let this = listener_of(graph, node);
    let limits = this.limits;
    let features = this.features();
    // Only a graph with a gateway looks at upgrades, so other graphs pay nothing for them.
    let pending = (features.upgrades && req.headers().contains_key(header::UPGRADE))
        .then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let bytes = if body.is_end_stream() {
        Bytes::new()
    } else {
        let read = Limited::new(body, limits.body).collect();
        match tokio::time::timeout(limits.read_timeout, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return text_response(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "reading the request body failed");
                return text_response(StatusCode::BAD_REQUEST, "Bad Request");
            }
            Err(_) => {
                let mut response = text_response(StatusCode::REQUEST_TIMEOUT, "Request Timeout");
                // The rest of the body is still on the wire; the connection cannot be reused.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
                return response;
            }
        }
    };
    // Boxed, and only for graphs that use them, so the plain request path stays small.
    let extras = (pending.is_some() || features.peers || features.streams).then(|| {
        Box::new(Extras {
            pending,
            peer: features.peers.then_some(peer),
            streams: features.streams,
        })
    });
    answer(graph, node, limits.body, &parts, bytes, extras).await
}

/// What a request brings beyond its head and body, depending on the graph's [`Features`].
struct Extras {
    /// The upgrade a gateway may claim.
    pending: Option<hyper::upgrade::OnUpgrade>,
    /// The client, for a proxy's `X-Forwarded-For`.
    peer: Option<Peer>,
    /// Whether the answer may be a streamed proxy response.
    streams: bool,
}

/// The per-request path after the body is read: decode it, build the payload, run it through
/// the graph from listener `node`, and turn the answer into a response. Public so benchmarks
/// can measure the in-process path without a socket.
pub async fn respond(
    graph: &Arc<Graph>,
    node: NodeId,
    parts: &http::request::Parts,
    body: Bytes,
) -> Response<Body> {
    let limit = listener_of(graph, node).limits.body;
    answer(graph, node, limit, parts, body, None).await
}

async fn answer(
    graph: &Arc<Graph>,
    node: NodeId,
    limit: usize,
    parts: &http::request::Parts,
    body: Bytes,
    extras: Option<Box<Extras>>,
) -> Response<Body> {
    let mut found = Negotiation::default();
    let header = header_map_noting(&parts.headers, &mut found);
    let body = match decode_negotiated(&found, body, limit) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, "request body did not decode");
            let status = e.status();
            let text = status.canonical_reason().unwrap_or("Bad Request");
            return text_response(status, text);
        }
    };
    let payload = payload_with_header(&parts.method, &parts.uri, parts.version, header, body);
    let guard = ExitGuard(Some(Process::new()));
    let (mut upgrading, mut streams) = (false, false);
    if let Some(extras) = extras {
        let Extras {
            pending,
            peer,
            streams: may_stream,
        } = *extras;
        streams = may_stream;
        if let Some(pending) = pending {
            upgrading = true;
            upgrade::offer(guard.proc(), pending);
        }
        if let Some(peer) = peer {
            guard
                .proc()
                .with_local::<Option<Peer>, _>(peer_key(), |p| *p = Some(peer));
        }
    }
    let cx = Cx::new(graph, guard.proc(), node);
    let mut answer = run(cx.write_guarded(OUT, payload)).await;
    if answer.is_error() {
        let error = answer.clone();
        answer = run(cx.write_guarded(ERROR, error.into_value())).await;
    }
    // A gateway that took the connection leaves its handshake response; the answer is not
    // sent (upstream's gateway took the response writer away from the listener).
    if upgrading && let Some(handshake) = upgrade::take_response(guard.proc()) {
        guard.finish(None);
        return handshake;
    }
    let streamed = if streams {
        crate::proxy::take_stream(guard.proc(), &answer)
    } else {
        None
    };
    let response = match streamed {
        Some(streamed) => streamed,
        None => response(answer, found.accept, found.accept_encoding),
    };
    let failed = response.status().as_u16() >= 400;
    guard
        .finish(failed.then(|| ErrorValue::new(format!("request answered {}", response.status()))));
    response
}

/// Awaits a flow, turning a panic into an error answer.
async fn run(flow: std::thread::Result<Flow<'_>>) -> Packet {
    match flow {
        Ok(Flow::Ready(p)) => p,
        Ok(Flow::Pending(f)) => AssertUnwindSafe(f)
            .catch_unwind()
            .await
            .unwrap_or_else(panicked),
        Err(panic) => panicked(panic),
    }
}

fn panicked(panic: Box<dyn Any + Send>) -> Packet {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a node panicked".to_owned());
    tracing::error!(panic = %message, "a node panicked while handling a request");
    Packet::error(format!("panic: {message}"))
}

trait WriteGuarded<'a> {
    fn write_guarded(self, port: OutPort, value: Value) -> std::thread::Result<Flow<'a>>;
}

impl<'a> WriteGuarded<'a> for Cx<'a> {
    /// Writes with the synchronous part of the flow guarded against panics.
    fn write_guarded(self, port: OutPort, value: Value) -> std::thread::Result<Flow<'a>> {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.send(port, value)))
    }
}

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
