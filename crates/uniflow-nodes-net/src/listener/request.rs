//! What happens to one request: its body read and decoded, its payload written to the
//! listener's `out` (and an error to `error`), the answer turned into the response, and its
//! process ended.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use uniflow_core::{Flow, Graph, LoadCx, NodeId, OutPort, Packet, Process, ProcessSlot};
use uniflow_value::{ErrorValue, Value};

use crate::payload::{Body, Negotiation, Received, payload, response, text_response};
use crate::upgrade;

use super::*;

/// Ends a request's process, if the flow made one (most never ask for theirs: see
/// [`ProcessSlot`]), and exits it if the request's future is dropped before it finishes (the
/// client went away), so hooks and per-process state are released.
pub(super) struct ExitGuard<'a> {
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
pub(super) fn exit_after_children(proc: Arc<Process>, error: Option<ErrorValue>) {
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
pub(super) fn handle(
    conn: Arc<Conn>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static {
    // The graph that runs now: the request finishes on it, whatever a reload does meanwhile.
    let served = conn.served.load_full();
    let features = served.features;
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
        let _flight = conn.meters.flight();
        let limits = &conn.limits;
        let bytes = match body {
            None => Bytes::new(),
            // Boxed: the body reader with its timer would more than double the future.
            Some(body) => match Box::pin(read_body(body, limits)).await {
                Ok(bytes) => bytes,
                Err(response) => {
                    conn.meters.answered(response.status());
                    return Ok(response);
                }
            },
        };
        let read = received(&served.place, &parts, bytes, &limits.body);
        let response = match crate::trace::start(&parts) {
            None => answer(&served.place, read, extras).await,
            // Boxed, so a traced request's larger future costs the others nothing.
            Some(traced) => Box::pin(traced.run(answer(&served.place, read, extras))).await,
        };
        conn.meters.answered(response.status());
        Ok(response)
    }
}

/// Reads a request body within the limits; a body that is too large, broken or late is
/// answered at once.
pub(super) async fn read_body(body: Incoming, limits: &Limits) -> Result<Bytes, Response<Body>> {
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
pub(super) struct Extras {
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
    let limits = &listener_of(&place.graph, place.node).limits.body;
    answer(place, received(place, parts, body, limits), None).await
}

/// A request read whole, as [`answer`] takes it: its body is decoded only when a node that
/// the listener at `place` writes to reads it.
fn received<'a>(
    place: &LoadCx,
    head: &'a http::request::Parts,
    body: Bytes,
    limits: &'a BodyLimits,
) -> Received<'a> {
    Received {
        head,
        decode: body.is_empty() || body_read(&place.graph, place.node, head),
        body,
        limits,
    }
}

pub(super) async fn answer(
    place: &LoadCx,
    read: Received<'_>,
    extras: Option<Box<Extras>>,
) -> Response<Body> {
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
pub(super) fn body_read(graph: &Graph, node: NodeId, head: &http::request::Parts) -> bool {
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
pub(super) fn failed_upgrade(answer: &Packet, found: &Negotiation<'_>) -> Option<Response<Body>> {
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
pub(super) fn answered(status: StatusCode) -> ErrorValue {
    ErrorValue::new(format!("request answered {status}"))
}

/// The response to a request body that does not decode.
#[cold]
#[inline(never)]
pub(super) fn undecodable(e: &crate::payload::BodyError) -> Response<Body> {
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
pub(super) fn run(
    flow: std::thread::Result<Flow<'_>>,
) -> Pin<Box<dyn Future<Output = Packet> + Send + '_>> {
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
pub(super) fn panicked(panic: Box<dyn Any + Send>) -> Packet {
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
pub(super) fn write_guarded<'s>(
    place: &'s LoadCx,
    slot: &'s ProcessSlot,
    port: OutPort,
    value: Value,
) -> std::thread::Result<Flow<'s>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        place.run_lazy(slot, move |cx| cx.send(port, value))
    }))
}
