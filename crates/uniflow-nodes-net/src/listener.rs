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

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
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
    Process, ProcessSlot, port,
};
use uniflow_spec::Diagnostic;
use uniflow_value::{ErrorValue, Value};

use crate::payload::{Body, BodyLimits, Negotiation, Received, payload, response, text_response};
use crate::{tls, upgrade};

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
    /// The largest request body, after decompression, and what decoding it may make.
    pub body: BodyLimits,
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
    /// Set when unloading starts; dropped when the one unloading stops waiting.
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

    /// What the graph needs from this listener, node `node` of `graph`.
    fn features(&self, place: &LoadCx) -> Features {
        *self.features.get_or_init(|| Features::of(place))
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

    /// Its requests' answers are the responses.
    fn answers_leave(&self) -> bool {
        true
    }

    fn load(&self, cx: LoadCx) -> Result<(), Error> {
        self.features(&cx);
        let listener = self
            .bind()
            .map_err(|e| Error::Start(format!("cannot listen on {}: {e}", self.addr)))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::Start(e.to_string()))?;
        let _ = self.local_addr.set(local);
        tracing::info!(address = %local, tls = self.tls.is_some(), "listening");
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, cx, stopped));
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
}

/// The listener node `node` of `graph`.
fn listener_of(graph: &Graph, node: NodeId) -> &ListenerNode {
    graph
        .node(node)
        .downcast_ref::<ListenerNode>()
        .expect("the node that serves is a listener")
}

/// The accept loop: one task per connection, each tracked so that unloading can wait for
/// them, and a sweep over the open connections that closes the ones that
/// waited too long (see [`Watch::look`]).
async fn serve(listener: TcpListener, place: LoadCx, mut stopped: watch::Receiver<bool>) {
    let (graph, node) = (&place.graph, place.node);
    let this = listener_of(graph, node);
    let limits = this.limits;
    let tls = this.tls.clone();
    let features = this.features(&place);
    let upgrades = features.upgrades;
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    // Every connection task holds a receiver; unloading waits until all are dropped.
    let (open, tracked) = watch::channel(());
    // The timeouts are enforced by this one sweep rather than by a timer per connection or per
    // request: a request then costs no timer registration and its connection no select.
    let period = limits.header_timeout.min(limits.idle_timeout) / SWEEPS_PER_TIMEOUT;
    let mut sweeps = tokio::time::interval(period.max(Duration::from_millis(1)));
    sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watched: Vec<Watch> = Vec::new();
    // Gone when the one unloading stops waiting for the connections to finish.
    let mut unloader = stopped.clone();
    // Made once, so the stop signal's waiter stays registered instead of being added and
    // removed (a lock each way) on every accept.
    let stop = stopped.changed();
    tokio::pin!(stop);
    loop {
        // Not biased: under a flood of connections a biased accept would starve the sweep and
        // the stop signal.
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
            now = sweeps.tick() => {
                let now = now.into_std();
                watched.retain_mut(|w| w.look(now, &limits));
                continue;
            }
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            place: place.clone(),
            features,
            limits,
            peer: crate::exchange::Peer {
                addr: remote,
                tls: tls.is_some(),
            },
            activity: Activity::default(),
        });
        // Closed connections leave the list at the next sweep, or here once it is full, so
        // that a burst of short connections does not hold their memory until then.
        if watched.len() == watched.capacity() {
            watched.retain(|w| w.conn.strong_count() > 0);
        }
        watched.push(Watch::new(&conn));
        let builder = Arc::clone(&builder);
        let tracked = tracked.clone();
        let io = Watched {
            inner: stream,
            conn: Arc::clone(&conn),
        };
        // Each kind of connection is its own task type: a task's future is moved whole when
        // it is spawned and when it finishes, so a plain connection must not carry the space
        // of a TLS stream or of the other kind of hyper connection (that tripled the bytes
        // copied per connection).
        match (tls.clone(), upgrades) {
            (None, false) => tokio::spawn(async move {
                let _tracked = tracked;
                serve_http(conn, io, &builder).await;
            }),
            (None, true) => tokio::spawn(async move {
                let _tracked = tracked;
                serve_upgradable(conn, io, &builder).await;
            }),
            (Some(acceptor), _) => tokio::spawn(async move {
                let _tracked = tracked;
                let handshake =
                    tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await;
                match handshake {
                    Ok(Ok(io)) if upgrades => serve_upgradable(conn, io, &builder).await,
                    Ok(Ok(io)) => serve_http(conn, io, &builder).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }),
        };
    }
    drop(listener);
    drop(tracked);
    let close_all = |how| {
        for w in &watched {
            if let Some(conn) = w.conn.upgrade() {
                conn.activity.close(how);
            }
        }
    };
    close_all(Close::Graceful);
    // In-flight requests finish, however long that takes, unless the one unloading gives up
    // on them (a shutdown timeout, `--shutdown-timeout`): it drops the stop signal's sender,
    // and what is still open is cut.
    tokio::select! {
        () = open.closed() => {}
        _ = unloader.wait_for(|_| false) => {
            tracing::warn!("in-flight requests did not finish in time; dropping them");
            close_all(Close::Abort);
        }
    }
}

/// How many sweeps run per shortest timeout: a timeout fires between 1 and 1¼ times its
/// length after the connection went quiet.
const SWEEPS_PER_TIMEOUT: u32 = 4;

/// One accepted connection: what its requests need, and what the sweep looks at.
struct Conn {
    /// The listener's place: its graph and id, and the nodes around it inside a block.
    place: LoadCx,
    /// The listener's, copied here so that a request need not find the listener node.
    features: Features,
    limits: Limits,
    peer: crate::exchange::Peer,
    activity: Activity,
}

/// Serves HTTP on an accepted (and, with TLS, handshaken) stream until the connection ends.
async fn serve_http<I>(conn: Arc<Conn>, io: I, builder: &auto::Builder<TokioExecutor>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let served = builder.serve_connection(TokioIo::new(io), service(Arc::clone(&conn)));
    drive(served, &conn.activity).await;
}

/// [`serve_http`] for a graph with a gateway: requests may upgrade the connection.
async fn serve_upgradable<I>(conn: Arc<Conn>, io: I, builder: &auto::Builder<TokioExecutor>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let served =
        builder.serve_connection_with_upgrades(TokioIo::new(io), service(Arc::clone(&conn)));
    drive(served, &conn.activity).await;
}

/// The per-request service of a connection.
fn service(
    conn: Arc<Conn>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
> + Send
+ 'static {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        // One reference count per request: the future must own what it uses (HTTP/2 spawns
        // it), and the connection's `Arc` carries the graph, the node and the counters.
        handle(Arc::clone(&conn), req)
    })
}

/// Runs a connection until it ends, shutting it down gracefully once the sweep (or the
/// listener's unloading) asks it to close, and dropping it when asked to abort.
async fn drive<C>(served: C, activity: &Activity)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut served = std::pin::pin!(served);
    // The close level seen at the last poll; `u8::MAX` before the first.
    let (mut seen, mut closing) = (u8::MAX, false);
    let done = std::future::poll_fn(|cx| {
        // This future is its task's root future, so the task's waker never changes; a wake
        // consumes the registration, and wakes come only with a new close level. So the
        // waker is registered on the first poll and again after each change, not on every
        // poll of every request.
        let mut level = activity.closing.load(Ordering::Acquire);
        if level != seen {
            activity.waker.register(cx.waker());
            // A close that raced with the registration is seen here.
            level = activity.closing.load(Ordering::Acquire);
            seen = level;
        }
        match level {
            CLOSE_NONE => {}
            CLOSE_GRACEFUL => {
                if !closing {
                    closing = true;
                    served.as_mut().graceful_shutdown();
                }
            }
            _ => return Poll::Ready(Ok(())),
        }
        served.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = done {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What a connection did since the sweep last looked, and the sweep's request to close it.
/// Requests and reads and writes only store flags and bump counters on it.
#[derive(Default)]
struct Activity {
    /// Bytes were read.
    read: AtomicBool,
    /// Bytes were written.
    wrote: AtomicBool,
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// Requests started (wrapping), so the sweep sees a request that came and went between
    /// two looks.
    started: AtomicUsize,
    /// The connection speaks HTTP/2, which has no header timeout between requests.
    h2: AtomicBool,
    /// How the connection was asked to close: one of the `CLOSE_*` levels.
    closing: AtomicU8,
    /// Wakes the connection's task when `closing` is set.
    waker: futures_util::task::AtomicWaker,
}

impl Activity {
    fn start(&self, version: http::Version) -> Busy<'_> {
        let shared = version == http::Version::HTTP_2;
        if shared && !self.h2.load(Ordering::Relaxed) {
            self.h2.store(true, Ordering::Relaxed);
        }
        add(&self.started, 1, shared);
        add(&self.in_flight, 1, shared);
        Busy {
            activity: self,
            shared,
        }
    }

    fn close(&self, how: Close) {
        self.closing.fetch_max(how as u8, Ordering::Release);
        self.waker.wake();
    }

    /// Records that bytes moved, writing the flag only when it changes.
    fn note(flag: &AtomicBool) {
        if !flag.load(Ordering::Relaxed) {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

const CLOSE_NONE: u8 = 0;
const CLOSE_GRACEFUL: u8 = Close::Graceful as u8;

/// How a connection is asked to close.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Close {
    /// Finish the requests in flight, then close (HTTP/2 says goodbye first).
    Graceful = 1,
    /// Drop the connection now: an HTTP/1 client stuck in the middle of its headers does not
    /// give up on a graceful close.
    Abort = 2,
}

/// Counts a request as in flight until dropped.
struct Busy<'a> {
    activity: &'a Activity,
    /// Whether other tasks count on the same connection (HTTP/2 streams).
    shared: bool,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        add(&self.activity.in_flight, usize::MAX, self.shared);
    }
}

/// Adds `delta` (wrapping; `usize::MAX` subtracts one) to a connection's counter. An HTTP/1
/// connection's requests all run one after another in the connection's task, so only that
/// task writes its counters (the sweep only reads them) and a plain load and store suffice;
/// HTTP/2 streams run in tasks of their own and need the atomic read-modify-write, a locked
/// instruction.
fn add(counter: &AtomicUsize, delta: usize, shared: bool) {
    if shared {
        counter.fetch_add(delta, Ordering::Relaxed);
    } else {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    }
}

/// The sweep's view of one connection.
struct Watch {
    conn: Weak<Conn>,
    /// Since when no request has been in flight, none has started and nothing was written:
    /// the connection waits for a request's headers.
    waiting_since: Instant,
    /// Since when no byte moved while no request was in flight.
    silent_since: Instant,
    /// `Activity::started` at the last look.
    started: usize,
    /// How the connection was last asked to close.
    closing: Option<Close>,
}

impl Watch {
    fn new(conn: &Arc<Conn>) -> Watch {
        let now = Instant::now();
        Watch {
            conn: Arc::downgrade(conn),
            waiting_since: now,
            silent_since: now,
            started: 0,
            closing: None,
        }
    }

    /// Looks at the connection's activity since the last look and asks it to close when it
    /// has waited for a request's headers longer than `header_timeout` (HTTP/1: a slow client,
    /// or a keep-alive connection idle that long) or has been silent with no request in
    /// flight longer than `idle_timeout`; a connection still open one look after it was asked
    /// to close gracefully is dropped. Returns whether the connection is still open.
    fn look(&mut self, now: Instant, limits: &Limits) -> bool {
        let Some(conn) = self.conn.upgrade() else {
            return false;
        };
        let activity = &conn.activity;
        let started = activity.started.load(Ordering::Relaxed);
        let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
        let wrote = activity.wrote.swap(false, Ordering::Relaxed);
        let read = activity.read.swap(false, Ordering::Relaxed);
        if busy || wrote || started != self.started {
            self.started = started;
            self.waiting_since = now;
        }
        if busy || wrote || read {
            self.silent_since = now;
        }
        let headers_late = !activity.h2.load(Ordering::Relaxed)
            && now.duration_since(self.waiting_since) >= limits.header_timeout;
        let silent = now.duration_since(self.silent_since) >= limits.idle_timeout;
        let how = match self.closing {
            None if headers_late || silent => {
                tracing::debug!(headers_late, silent, "closing a connection");
                Close::Graceful
            }
            Some(Close::Graceful) if headers_late || silent => Close::Abort,
            _ => return true,
        };
        self.closing = Some(how);
        activity.close(how);
        true
    }
}

/// A stream that records that bytes moved.
struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
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
            Activity::note(&this.conn.activity.read);
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
            Activity::note(&this.conn.activity.wrote);
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
            Activity::note(&this.conn.activity.wrote);
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

/// Ends a request's process, if the flow made one (most never ask for theirs: see
/// [`ProcessSlot`]), and exits it if the request's future is dropped before it finishes (the
/// client went away), so hooks and per-process state are released.
struct ExitGuard<'a> {
    slot: &'a ProcessSlot,
    finished: bool,
}

impl<'a> ExitGuard<'a> {
    fn new(slot: &'a ProcessSlot) -> ExitGuard<'a> {
        ExitGuard {
            slot,
            finished: false,
        }
    }

    /// Ends the request's process, with the error `error` makes: at once, or, when forked
    /// children still run, once they have finished (upstream joined children before
    /// exiting). The response does not wait for them; only flows that fork pay for the task
    /// that waits.
    fn finish(mut self, error: impl FnOnce() -> Option<ErrorValue>) {
        self.finished = true;
        let Some(proc) = self.slot.made() else {
            return;
        };
        let error = error();
        if proc.has_children() {
            exit_after_children(Arc::clone(proc), error);
        } else {
            proc.exit(error);
        }
    }
}

/// Exits `proc` with `error` once its forked children have finished.
#[cold]
#[inline(never)]
fn exit_after_children(proc: Arc<Process>, error: Option<ErrorValue>) {
    tokio::spawn(async move {
        proc.join().await;
        proc.exit(error);
    });
}

impl ExitGuard<'_> {
    /// Ends the request's process now with `error`, and with it the children still running
    /// (see [`Process::exit`]), instead of waiting for them as [`ExitGuard::finish`] does.
    fn abort(mut self, error: ErrorValue) {
        self.finished = true;
        if let Some(proc) = self.slot.made() {
            proc.exit(Some(error));
        }
    }
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        if !self.finished
            && let Some(proc) = self.slot.made()
        {
            proc.exit(Some(ErrorValue::new("request canceled")));
        }
    }
}

/// Serves one request: reads the body within the limits, then [`respond`].
///
/// What needs no waiting is done before the future is made, so that the future keeps only the
/// request's head, its body and the connection: hyper moves it into place on every request.
fn handle(
    conn: Arc<Conn>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static {
    let features = conn.features;
    // Only a graph with a gateway looks at upgrades, so other graphs pay nothing for them.
    let pending = (features.upgrades && req.headers().contains_key(header::UPGRADE))
        .then(|| hyper::upgrade::on(&mut req));
    // Boxed, and only for graphs that use them, so the plain request path stays small.
    let extras = (pending.is_some() || features.peers || features.streams).then(|| {
        Box::new(Extras {
            pending,
            peer: features.peers.then_some(conn.peer),
            streams: features.streams,
        })
    });
    let (parts, body) = req.into_parts();
    let body = (!body.is_end_stream()).then_some(body);
    async move {
        let _busy = conn.activity.start(parts.version);
        let limits = &conn.limits;
        let bytes = match body {
            None => Bytes::new(),
            // Boxed: the body reader with its timer would more than double the future.
            Some(body) => match Box::pin(read_body(body, limits)).await {
                Ok(bytes) => bytes,
                Err(response) => return Ok(response),
            },
        };
        let read = Received {
            head: &parts,
            decode: bytes.is_empty() || body_read(&conn.place.graph, conn.place.node, &parts),
            body: bytes,
            limits: &limits.body,
        };
        Ok(answer(&conn.place, read, extras).await)
    }
}

/// Reads a request body within the limits; a body that is too large, broken or late is
/// answered at once.
async fn read_body(body: Incoming, limits: &Limits) -> Result<Bytes, Response<Body>> {
    let read = Limited::new(body, limits.body.bytes).collect();
    match tokio::time::timeout(limits.read_timeout, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(text_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
        )),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "reading the request body failed");
            Err(text_response(StatusCode::BAD_REQUEST, "Bad Request"))
        }
        Err(_) => {
            let mut response = text_response(StatusCode::REQUEST_TIMEOUT, "Request Timeout");
            // The rest of the body is still on the wire; the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            Err(response)
        }
    }
}

/// What a request brings beyond its head and body, depending on the graph's [`Features`].
struct Extras {
    /// The upgrade a gateway may claim.
    pending: Option<hyper::upgrade::OnUpgrade>,
    /// The client, for a proxy's `X-Forwarded-For`.
    peer: Option<crate::exchange::Peer>,
    /// Whether the answer may be a streamed proxy response.
    streams: bool,
}

impl Extras {
    /// Puts the upgrade and the client into the request's process; returns whether an
    /// upgrade was offered and whether the answer may be a stream.
    #[inline(never)]
    fn offer(self, slot: &ProcessSlot) -> (bool, bool) {
        let Extras {
            pending,
            peer,
            streams,
        } = self;
        let upgrading = pending.is_some();
        if let Some(pending) = pending {
            upgrade::offer(slot.get(), pending);
        }
        if let Some(peer) = peer {
            crate::exchange::record_peer(slot.get(), peer);
        }
        (upgrading, streams)
    }
}

/// The per-request path after the body is read: decode it, build the payload, run it through
/// the graph from the listener at `place`, and turn the answer into a response. Public so
/// benchmarks can measure the in-process path without a socket.
pub async fn respond(place: &LoadCx, parts: &http::request::Parts, body: Bytes) -> Response<Body> {
    let (graph, node) = (&place.graph, place.node);
    let listener = listener_of(graph, node);
    let read = Received {
        head: parts,
        decode: body.is_empty() || body_read(graph, node, parts),
        body,
        limits: &listener.limits.body,
    };
    answer(place, read, None).await
}

async fn answer(place: &LoadCx, read: Received<'_>, extras: Option<Box<Extras>>) -> Response<Body> {
    let mut found = Negotiation::default();
    let payload = match payload(read, &mut found) {
        Ok(v) => v,
        Err(e) => return undecodable(&e),
    };
    let slot = ProcessSlot::new();
    let guard = ExitGuard::new(&slot);
    let (upgrading, streams) = match extras {
        Some(extras) => (*extras).offer(&slot),
        None => (false, false),
    };
    // A flow that is ready (most are) is taken as it is; a pending one is awaited through a
    // boxed future, so that awaiting it adds neither code nor space to this future's hot
    // path (the flow's own future is boxed already).
    let mut answer = match write_guarded(place, &slot, OUT, payload) {
        Ok(Flow::Ready(answer)) => answer,
        flow => run(flow).await,
    };
    if answer.is_error() {
        let error = answer.clone();
        answer = match write_guarded(place, &slot, ERROR, error.into_value()) {
            Ok(Flow::Ready(answer)) => answer,
            flow => run(flow).await,
        };
    }
    // A gateway that took the connection leaves its handshake response, sent instead of the
    // answer (upstream's gateway took the response writer away from the listener), unless the
    // flow failed: then the upgrade fails with the failure.
    if upgrading && let Some(handshake) = upgrade::take_response(slot.get()) {
        let Some(failed) = failed_upgrade(&answer, &found) else {
            guard.finish(|| None);
            return handshake;
        };
        // The connection's work, forked from the process (the gateway waiting for the
        // upgrade, a client connection the flow opened), stops with it.
        guard.abort(answered(failed.status()));
        return failed;
    }
    // A proxy that streams its answer leaves the stream in the process it made.
    let streamed = match slot.made() {
        Some(proc) if streams => crate::exchange::take_stream(proc, &answer),
        _ => None,
    };
    let response = match streamed {
        Some(streamed) => streamed,
        None => response(answer, found.accept, found.accept_encoding),
    };
    let status = response.status();
    guard.finish(|| (status.as_u16() >= 400).then(|| answered(status)));
    response
}

/// Whether a node that listener `node` writes the request `head` to reads its body (see
/// [`Node::reads_body`]). An unlinked `out` answers with the request itself, body and all.
/// Only a request with a body asks: a bodiless one costs what it did before a node could
/// say no.
#[inline(never)]
fn body_read(graph: &Graph, node: NodeId, head: &http::request::Parts) -> bool {
    let targets = graph.targets(node, OUT);
    if targets.is_empty() {
        return true;
    }
    // The path as the payload carries it, decoded: a router matches that one.
    let raw = head.uri.path();
    let decoded;
    let path = if raw.contains('%') {
        decoded = crate::payload::decode_path(raw);
        &*decoded
    } else {
        raw
    };
    let method = head.method.as_str();
    targets
        .iter()
        .any(|t| graph.node(t.node).reads_body(t.port, method, path))
}

/// The response to an upgrade a gateway claimed, when the flow's answer says it failed: an
/// error (an upstream that cannot be reached, say) is a 502, and an answer with a status of
/// 400 or more is that answer. `None` when the upgrade goes ahead.
#[cold]
#[inline(never)]
fn failed_upgrade(answer: &Packet, found: &Negotiation<'_>) -> Option<Response<Body>> {
    match answer.value()? {
        Value::Error(error) => {
            tracing::warn!(%error, "websocket upgrade failed; answered 502 Bad Gateway");
            Some(text_response(StatusCode::BAD_GATEWAY, "Bad Gateway"))
        }
        Value::Map(m)
            if m.get("status")
                .and_then(Value::as_i64)
                .is_some_and(|s| s >= 400) =>
        {
            let response = response(answer.clone(), found.accept, found.accept_encoding);
            tracing::warn!(status = %response.status(), "websocket upgrade refused by the flow's answer");
            Some(response)
        }
        _ => None,
    }
}

/// The error a request's process exits with when its answer is a 4xx or 5xx.
#[cold]
#[inline(never)]
fn answered(status: StatusCode) -> ErrorValue {
    ErrorValue::new(format!("request answered {status}"))
}

/// The response to a request body that does not decode.
#[cold]
#[inline(never)]
fn undecodable(e: &crate::payload::BodyError) -> Response<Body> {
    match e {
        // A cap the operator may have to raise, so it is said where they look.
        crate::payload::BodyError::TooMany { .. } => {
            tracing::info!(reason = %e, "request body refused (the listener's max_fields and max_parts set the caps)");
        }
        _ => tracing::debug!(error = %e, "request body did not decode"),
    }
    let status = e.status();
    let text = status.canonical_reason().unwrap_or("Bad Request");
    text_response(status, text)
}

/// Awaits a flow that did not finish at once, turning a panic into an error answer.
fn run(flow: std::thread::Result<Flow<'_>>) -> Pin<Box<dyn Future<Output = Packet> + Send + '_>> {
    Box::pin(async move {
        match flow {
            Ok(Flow::Ready(p)) => p,
            Ok(Flow::Pending(f)) => AssertUnwindSafe(f)
                .catch_unwind()
                .await
                .unwrap_or_else(panicked),
            Err(panic) => panicked(panic),
        }
    })
}

#[cold]
#[inline(never)]
fn panicked(panic: Box<dyn Any + Send>) -> Packet {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a node panicked".to_owned());
    tracing::error!(panic = %message, "a node panicked while handling a request");
    Packet::error(format!("panic: {message}"))
}

/// Writes `value` to the listener's output `port` for the request whose process `slot` makes,
/// with the synchronous part of the flow guarded against panics (an awaited part is guarded
/// where it is awaited).
fn write_guarded<'s>(
    place: &'s LoadCx,
    slot: &'s ProcessSlot,
    port: OutPort,
    value: Value,
) -> std::thread::Result<Flow<'s>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        place.run_lazy(slot, move |cx| cx.send(port, value))
    }))
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
