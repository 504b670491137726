//! What a request's process carries between the listener and the nodes that serve it, so
//! that neither names the other: the client's address (for a proxy's `X-Forwarded-For`) and
//! a response a proxy streams back for the listener to send.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Response, header};
use uniflow_core::{Local, Packet, Process};
use uniflow_value::Value;

use crate::payload::Body;

/// The client of the request a process serves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    /// The client's address.
    pub(crate) addr: SocketAddr,
    /// Whether the listener serves TLS.
    pub(crate) tls: bool,
}

/// Where a process keeps its [`Peer`].
static PEER: Local<Option<Peer>> = Local::new();

/// The client of the request that `proc` (or an ancestor) serves, when the listener recorded
/// it (it does when its graph holds a `proxy`).
pub(crate) fn peer(proc: &Arc<Process>) -> Option<Peer> {
    let mut current = Some(proc);
    while let Some(p) = current {
        if let Some(peer) = p.with_local(&PEER, |p| *p) {
            return Some(peer);
        }
        current = p.parent();
    }
    None
}

/// Records the client of the request `proc` serves.
pub(crate) fn record_peer(proc: &Process, peer: Peer) {
    proc.with_local(&PEER, |p| *p = Some(peer));
}

/// An upstream response waiting in the request's process for the listener to send it.
struct Streamed {
    /// Which answer it belongs to (see [`identity`]).
    answer: usize,
    response: Option<Response<hyper::body::Incoming>>,
}

/// Where a process keeps a [`Streamed`] response.
static STREAM: Local<Option<Streamed>> = Local::new();

/// The identity of a payload map: its shared entries' address, which every clone keeps.
fn identity(payload: &Value) -> usize {
    match payload {
        Value::Map(m) => m.entries().as_ptr() as usize,
        _ => 0,
    }
}

/// The streamed response behind `answer`, if a streaming proxy produced exactly this answer
/// in `proc`.
pub(crate) fn take_stream(proc: &Process, answer: &Packet) -> Option<Response<Body>> {
    let Packet::Data(value @ Value::Map(_)) = answer else {
        return None;
    };
    let id = identity(value);
    let response = proc.with_local(&STREAM, |s| {
        s.take().filter(|s| s.answer == id)?.response.take()
    })?;
    let (mut parts, body) = response.into_parts();
    // The body's own length decides the framing.
    parts.headers.remove(header::CONTENT_LENGTH);
    Some(Response::from_parts(parts, Body::stream(body)))
}

/// Leaves `response` in `proc` for the listener, as the body behind `answer`.
pub(crate) fn leave_stream(
    proc: &Process,
    answer: &Value,
    response: Response<hyper::body::Incoming>,
) {
    let streamed = Streamed {
        answer: identity(answer),
        response: Some(response),
    };
    proc.with_local(&STREAM, |s| *s = Some(streamed));
}
