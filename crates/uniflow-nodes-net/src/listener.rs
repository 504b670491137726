//! `listener`: an HTTP/1.1 and h2c server; each request starts a process.
//!
//! The socket is bound when the graph loads, so a port already in use fails the load with a
//! clear error. Per request: decode the body (400 when it does not decode, 413 when too
//! large), build the payload, write it to `out`; an error answer is written again to `error`
//! (if linked, its answer replaces the error); the answer becomes the response. The process
//! exits after the response is built, with an error when the status is 400 or more. A panic in
//! a node answers 500 and the server keeps serving; a client that disconnects drops the
//! request's work, and the process exits.
//!
//! Hyper's connection task is the only task per connection; the graph is entered by a plain
//! call, so a request costs no spawn and no channel.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uniflow_core::{
    CompileCx, Cx, Error, Flow, Graph, InPort, LoadCx, Node, NodeId, NodeSpec, OutPort, Packet,
    Process, port,
};
use uniflow_spec::Diagnostic;
use uniflow_value::{ErrorValue, Value};

use crate::payload::{decode_body, request_payload, response, text_response};

/// The listen backlog; the kernel caps it at `net.core.somaxconn`. 1024 clients connecting at
/// once must not wait for a SYN retry.
const BACKLOG: i32 = 4096;
/// The largest request body read into memory.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How long unloading waits for in-flight requests before dropping them.
const DRAIN: Duration = Duration::from_secs(10);

const OUT: OutPort = OutPort(0);
const ERROR: OutPort = OutPort(1);

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
    /// A TLS certificate (PEM); not supported yet.
    #[serde(default)]
    pub cert: Option<String>,
    /// A TLS key (PEM); not supported yet.
    #[serde(default)]
    pub key: Option<String>,
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
        if self.cert.is_some() || self.key.is_some() {
            problems.push(cx.error("cert", "TLS (`cert`/`key`) is not supported yet"));
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
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Box::new(ListenerNode {
            addr: SocketAddr::new(ip, self.port),
            local_addr: OnceLock::new(),
            running: Mutex::new(None),
        }))
    }
}

/// The compiled `listener`.
pub struct ListenerNode {
    addr: SocketAddr,
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
        let listener = self
            .bind()
            .map_err(|e| Error::Start(format!("cannot listen on {}: {e}", self.addr)))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::Start(e.to_string()))?;
        let _ = self.local_addr.set(local);
        tracing::info!(address = %local, "listening");
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

async fn serve(
    listener: TcpListener,
    graph: Arc<Graph>,
    node: NodeId,
    mut stopped: watch::Receiver<bool>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
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
        let graph = Arc::clone(&graph);
        let service = hyper::service::service_fn(move |req| {
            let graph = Arc::clone(&graph);
            async move { Ok::<_, Infallible>(handle(&graph, node, req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {DRAIN:?}; dropping them");
    }
}

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

/// Serves one request: reads the body, then [`respond`].
async fn handle(graph: &Arc<Graph>, node: NodeId, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let bytes = if body.is_end_stream() {
        Bytes::new()
    } else {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return text_response(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the request body failed");
                return text_response(StatusCode::BAD_REQUEST, "Bad Request");
            }
        }
    };
    respond(graph, node, &parts, bytes).await
}

/// The per-request path after the body is read: decode it, build the payload, run it through
/// the graph from listener `node`, and turn the answer into a response. Public so benchmarks
/// can measure the in-process path without a socket.
pub async fn respond(
    graph: &Arc<Graph>,
    node: NodeId,
    parts: &http::request::Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let body = match decode_body(&parts.headers, body) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e.0, "request body did not decode");
            return text_response(StatusCode::BAD_REQUEST, "Bad Request");
        }
    };
    let payload = request_payload(
        &parts.method,
        &parts.uri,
        parts.version,
        &parts.headers,
        body,
    );
    let guard = ExitGuard(Some(Process::new()));
    let cx = Cx::new(graph, guard.proc(), node);
    let mut answer = run(cx.write_guarded(OUT, payload)).await;
    if answer.is_error() {
        let error = answer.clone();
        answer = run(cx.write_guarded(ERROR, error.into_value())).await;
    }
    let response = response(answer, parts.headers.get(http::header::ACCEPT));
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
