//! The WebSocket connection contract that `gateway` and `websocket` share.
//!
//! `io` opens a connection for the process it arrives in (the gateway upgrades the request,
//! the client dials out) and answers `None`. The connection then belongs to that process: every
//! message received is written to `out` as `{type, data}` in a child process, one at a time and
//! in order (`type` 1 text, 2 binary; `data` a string for plain text, JSON included, and bytes
//! for anything else, HTML included), and when the peer closes, `{type: 8, data: <the close
//! frame's code and reason>}` is written last. `in` sends a message on the connection of its
//! process or the nearest ancestor that has one: `{type, data}` (8 close, 9 ping, 10 pong too),
//! or any other value (bytes as a binary frame, anything else as a text frame, JSON for
//! non-strings). Failures go to `error`.
//!
//! One task per connection reads and writes; `in` hands it messages through a bounded channel,
//! so a slow peer slows its writers down instead of growing a queue. The task belongs to the
//! node: unloading stops it. The request's process stays alive (its listener waits for its
//! children) until the connection ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use uniflow_core::{Cx, Flow, InPort, LoadCx, Local, OutPort, Packet, Process, port, shape};
use uniflow_value::{ErrorValue, Map, Value};

/// Opens a connection for the process.
pub(crate) const IO: InPort = InPort(0);
/// Sends a message on the process's connection.
pub(crate) const IN: InPort = InPort(1);
/// Received messages.
pub(crate) const OUT: OutPort = shape::OUT;
/// Failures.
pub(crate) const ERROR: OutPort = shape::ERROR;

/// Messages `in` may queue for one connection before writers wait.
const QUEUE: usize = 64;
/// How long unloading waits for connection tasks to stop.
const DRAIN: Duration = Duration::from_secs(5);

pub(crate) fn in_port(name: &str) -> Option<InPort> {
    match name {
        "io" => Some(IO),
        port::IN => Some(IN),
        _ => None,
    }
}

pub(crate) fn out_port(name: &str) -> Option<OutPort> {
    shape::out_port(name)
}

/// Which end of its connections a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The server end: a `gateway`, which took a client's request.
    Server,
    /// The client end: a `websocket`, which dialled a server.
    Client,
}

/// The connections one node opened, so that unloading the node can stop them.
pub(crate) struct Connections {
    stop: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
    config: WebSocketConfig,
    side: Side,
    /// Where a process keeps the writing end of its connection by this node.
    slot: Local<Slot>,
}

/// A connection's writing end, kept in the process that owns the connection.
#[derive(Default)]
pub(crate) struct Slot(Option<mpsc::Sender<Message>>);

impl Connections {
    pub(crate) fn new(side: Side, buffer: Option<usize>) -> Connections {
        let mut config = WebSocketConfig::default();
        if let Some(size) = buffer.filter(|s| *s > 0) {
            config = config.read_buffer_size(size).write_buffer_size(size);
        }
        Connections {
            stop: watch::channel(false).0,
            tasks: Mutex::new(JoinSet::new()),
            config,
            side,
            slot: Local::new(),
        }
    }

    pub(crate) fn config(&self) -> WebSocketConfig {
        self.config
    }

    /// Gives `proc` a connection: registers its writing end in the process, then runs it in a
    /// task once `open` yields the stream. The task emits on the `out` of the
    /// node at `place` in children of a child of `proc`, which keeps `proc` alive until the
    /// connection ends.
    pub(crate) fn open<S, F>(&self, place: LoadCx, proc: &Arc<Process>, open: F)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: Future<Output = Option<WebSocketStream<S>>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUE);
        proc.with_local(&self.slot, |slot| slot.0 = Some(tx));
        let owner = proc.fork();
        let mut stopped = self.stop.subscribe();
        let side = self.side;
        let run = async move {
            let ended = async {
                if let Some(ws) = open.await {
                    serve(&place, &owner, ws, rx, side).await;
                }
            };
            tokio::select! {
                () = ended => {}
                _ = stopped.wait_for(|stop| *stop) => {}
                () = owner.exited() => {}
            }
            owner.exit(None);
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        // Reap finished connections so the set does not grow with every one ever opened.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(run);
    }

    /// Stops every connection and waits (bounded) for their tasks.
    pub(crate) fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let _ = self.stop.send(true);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        Box::pin(async move {
            let all = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(DRAIN, all).await.is_err() {
                tracing::warn!("websocket connections did not stop within {DRAIN:?}");
            }
        })
    }
}

/// Reads and writes one connection until the peer closes it or it fails.
async fn serve<S>(
    place: &LoadCx,
    owner: &Arc<Process>,
    ws: WebSocketStream<S>,
    mut rx: mpsc::Receiver<Message>,
    side: Side,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    // Set once the peer has closed (or the connection failed): the writer then stops taking
    // messages and flushes the protocol's close reply.
    let ended = tokio::sync::Notify::new();
    let writer = async {
        loop {
            tokio::select! {
                message = rx.recv() => {
                    // All senders gone: the owning process has exited; close from our side.
                    let Some(message) = message else { break };
                    let closing = message.is_close();
                    // A write after the peer closed fails; the close reply below still goes.
                    if let Err(e) = sink.send(message).await {
                        tracing::debug!(error = %e, "websocket write failed");
                        break;
                    }
                    if closing {
                        break;
                    }
                }
                () = ended.notified() => break,
            }
        }
        // Sends our close frame if none went yet, and flushes a pending close reply.
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    };
    let reader = async {
        loop {
            let (kind, data) = match stream.next().await {
                Some(Ok(Message::Text(text))) => (1, sniff(Bytes::from(text))),
                Some(Ok(Message::Binary(bytes))) => (2, sniff(bytes)),
                Some(Ok(Message::Close(frame))) => {
                    ended.notify_one();
                    emit(place, owner, 8, Value::Bytes(close_bytes(frame.as_ref()))).await;
                    return;
                }
                // Pings are answered by the protocol layer; pongs carry nothing to pass on.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Err(e)) => {
                    ended_abnormally(side, Some(&e));
                    break;
                }
                None => {
                    ended_abnormally(side, None);
                    break;
                }
            };
            emit(place, owner, kind, data).await;
        }
        ended.notify_one();
        emit(place, owner, 8, Value::Bytes(abnormal())).await;
    };
    tokio::join!(reader, writer);
}

/// Writes one received message to `out` in a child of `owner`, and waits for its answer so
/// messages are handled in order.
async fn emit(place: &LoadCx, owner: &Arc<Process>, kind: i64, data: Value) {
    let child = owner.fork();
    let message = Value::Map(Map::from([("data", data), ("type", Value::Int(kind))]));
    let answer = place.run(&child, move |cx| cx.send(OUT, message)).await;
    if let Packet::Data(Value::Error(e)) = &answer {
        tracing::debug!(error = %e, "a websocket message was answered with an error");
    }
    child.exit(answer.value().and_then(Value::as_error).cloned());
}

/// Logs a connection that ended without a close frame: a server the flow dialled that goes
/// away is worth a warning, a client that does (a closed browser tab) is not.
#[cold]
fn ended_abnormally(side: Side, error: Option<&tokio_tungstenite::tungstenite::Error>) {
    let why = error.map_or_else(|| "the connection closed".to_owned(), ToString::to_string);
    match side {
        Side::Client => tracing::warn!(
            error = %why,
            "websocket: the server's connection ended without a close frame"
        ),
        Side::Server => tracing::debug!(error = %why, "websocket read failed"),
    }
}

/// The close code 1006 (closed without a close frame), as a close frame's bytes.
fn abnormal() -> Bytes {
    Bytes::copy_from_slice(&1006u16.to_be_bytes())
}

fn close_bytes(frame: Option<&CloseFrame>) -> Bytes {
    let Some(frame) = frame else {
        return Bytes::new();
    };
    let mut out = BytesMut::with_capacity(2 + frame.reason.len());
    out.put_u16(u16::from(frame.code));
    out.put_slice(frame.reason.as_bytes());
    out.freeze()
}

/// Message data as a value, by its content as upstream sniffed it: plain text (JSON included)
/// is a string; markup (HTML, XML), PDF and PostScript, and anything that is not UTF-8 text
/// are bytes.
pub(crate) fn sniff(bytes: Bytes) -> Value {
    if looks_like_text(&bytes)
        && let Ok(text) = std::str::from_utf8(&bytes)
    {
        return Value::from(text.to_owned());
    }
    Value::Bytes(bytes)
}

fn looks_like_text(bytes: &[u8]) -> bool {
    // The control bytes that make content sniffing (WHATWG) call data binary.
    if bytes
        .iter()
        .take(512)
        .any(|b| matches!(b, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F))
    {
        return false;
    }
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b'\t' | b'\n' | 0x0C | b'\r' | b' '))
        .unwrap_or(bytes.len());
    let rest = &bytes[start..];
    const MARKUP: &[&[u8]] = &[
        b"<!DOCTYPE HTML",
        b"<HTML",
        b"<HEAD",
        b"<SCRIPT",
        b"<IFRAME",
        b"<H1",
        b"<DIV",
        b"<FONT",
        b"<TABLE",
        b"<A",
        b"<STYLE",
        b"<TITLE",
        b"<B",
        b"<BODY",
        b"<BR",
        b"<P",
        b"<!--",
        b"<?XML",
    ];
    let markup = MARKUP.iter().any(|sig| {
        rest.len() > sig.len()
            && rest[..sig.len()].eq_ignore_ascii_case(sig)
            && (matches!(rest[sig.len()], b' ' | b'>')
                || sig.ends_with(b"--")
                || sig.ends_with(b"XML"))
    });
    !markup && !bytes.starts_with(b"%PDF-") && !bytes.starts_with(b"%!PS-Adobe-")
}

/// The connection `proc` or its nearest ancestor owns under `key`.
fn find(proc: &Arc<Process>, key: &Local<Slot>) -> Option<mpsc::Sender<Message>> {
    let mut current = Some(proc);
    while let Some(p) = current {
        if let Some(tx) = p.with_local(key, |slot| slot.0.clone()) {
            return Some(tx);
        }
        current = p.parent();
    }
    None
}

/// The message `in` sends for `value` from the `side` end of a connection.
fn message(value: &Value, side: Side) -> Result<Message, String> {
    let (kind, data) = match value {
        Value::Map(m) if m.get("type").is_some_and(|t| t.as_i64().is_some()) => (
            m.get("type").and_then(Value::as_i64).unwrap_or(1),
            m.get("data").cloned().unwrap_or(Value::Null),
        ),
        Value::Bytes(_) => (2, value.clone()),
        other => (1, other.clone()),
    };
    let bytes = match &data {
        Value::Null => Bytes::new(),
        Value::String(s) => s.as_bytes().clone(),
        Value::Bytes(b) => b.clone(),
        other => Bytes::from(
            serde_json::to_vec(other).map_err(|e| format!("cannot encode the message: {e}"))?,
        ),
    };
    Ok(match kind {
        1 => Message::Text(
            Utf8Bytes::try_from(bytes).map_err(|_| "a text message must be UTF-8".to_owned())?,
        ),
        2 => Message::Binary(bytes),
        8 => Message::Close(match bytes.len() {
            0 | 1 => None,
            _ => Some(close_frame(
                u16::from_be_bytes([bytes[0], bytes[1]]),
                Utf8Bytes::try_from(bytes.slice(2..))
                    .map_err(|_| "a close reason must be UTF-8".to_owned())?,
                side,
            )),
        }),
        9 => Message::Ping(bytes),
        10 => Message::Pong(bytes),
        other => {
            return Err(format!(
                "unknown message type {other}: use 1, 2, 8, 9 or 10"
            ));
        }
    })
}

/// The close frame for `code` and `reason` as the `side` end sends it.
///
/// The codes that only report a close (1005 none given, 1006 closed without a close frame,
/// 1015 TLS failed) must not be sent. A flow that relays a connection writes them when the
/// other connection ended that way (`out` carries them); the relay then closes with an error
/// code that says so: 1011 (internal error) from a server, 1001 (going away) from a client.
fn close_frame(code: u16, reason: Utf8Bytes, side: Side) -> CloseFrame {
    let what = match code {
        1005 => "closed without a status code",
        1006 => "closed without a close frame",
        1015 => "failed its TLS handshake",
        _ => {
            return CloseFrame {
                code: CloseCode::from(code),
                reason,
            };
        }
    };
    let code = match side {
        Side::Server => CloseCode::Error,
        Side::Client => CloseCode::Away,
    };
    CloseFrame {
        code,
        reason: Utf8Bytes::from(format!("the relayed connection {what}")),
    }
}

/// Handles `in`: sends the packet on the process's connection by the node whose connections
/// are `connections`.
pub(crate) fn send<'a>(cx: Cx<'a>, connections: &Connections, packet: Packet) -> Flow<'a> {
    let (key, side) = (&connections.slot, connections.side);
    let Packet::Data(value) = packet else {
        return Flow::Ready(Packet::None);
    };
    let message = match message(&value, side) {
        Ok(m) => m,
        Err(e) => return fail(cx, format!("websocket: {e}")),
    };
    let Some(tx) = find(cx.proc(), key) else {
        return fail(
            cx,
            "websocket: no connection belongs to this process".to_owned(),
        );
    };
    let closing = message.is_close();
    Flow::pending(async move {
        match tx.send(message).await {
            Ok(()) => Packet::None,
            // Closing a connection that is already closed is no failure.
            Err(_) if closing => Packet::None,
            Err(_) => {
                cx.send(
                    ERROR,
                    Value::Error(ErrorValue::new("websocket: the connection is closed")),
                )
                .await
            }
        }
    })
}

/// Writes an error to `error`.
pub(crate) fn fail(cx: Cx<'_>, message: String) -> Flow<'_> {
    cx.send(ERROR, Value::Error(ErrorValue::new(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_keeps_text_and_json_as_strings() {
        assert_eq!(sniff(Bytes::from_static(b"hello")), Value::from("hello"));
        assert_eq!(
            sniff(Bytes::from_static(b"{\"a\":1}")),
            Value::from("{\"a\":1}")
        );
        for binary in [
            &b"<html><body>x</body></html>"[..],
            b"  <!DOCTYPE html>",
            b"\x00\x01",
            b"%PDF-1.4",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(sniff(Bytes::copy_from_slice(binary)), Value::Bytes(_)),
                "{binary:?}"
            );
        }
        // `<a` needs a space or `>` after it to be markup.
        assert_eq!(sniff(Bytes::from_static(b"<abc")), Value::from("<abc"));
    }

    #[test]
    fn values_become_messages() {
        let m: Value = yaml_serde::from_str("{type: 1, data: hi}").unwrap();
        assert_eq!(message(&m, Side::Server).unwrap(), Message::text("hi"));
        assert_eq!(
            message(&Value::Bytes(Bytes::from_static(b"b")), Side::Server).unwrap(),
            Message::binary(Bytes::from_static(b"b"))
        );
        let m: Value = yaml_serde::from_str("{a: 1}").unwrap();
        assert_eq!(
            message(&m, Side::Server).unwrap(),
            Message::text("{\"a\":1}")
        );
        let close = Value::Map(Map::from([
            ("type", Value::Int(8)),
            ("data", Value::Bytes(Bytes::from_static(b"\x03\xe8bye"))),
        ]));
        let Message::Close(Some(frame)) = message(&close, Side::Server).unwrap() else {
            panic!("not a close")
        };
        assert_eq!(
            (u16::from(frame.code), frame.reason.as_str()),
            (1000, "bye")
        );
        assert_eq!(
            close_bytes(Some(&frame)),
            Bytes::from_static(b"\x03\xe8bye")
        );
        let bad: Value = yaml_serde::from_str("{type: 3, data: x}").unwrap();
        assert!(message(&bad, Side::Server).is_err());
    }

    #[test]
    fn a_relayed_abnormal_close_is_sent_as_an_error_code() {
        let closed = |code: u16, side| {
            let mut data = code.to_be_bytes().to_vec();
            data.extend_from_slice(b"why");
            let close = Value::Map(Map::from([
                ("type", Value::Int(8)),
                ("data", Value::Bytes(Bytes::from(data))),
            ]));
            match message(&close, side).unwrap() {
                Message::Close(Some(frame)) => frame,
                other => panic!("not a close with a code: {other:?}"),
            }
        };
        for code in [1005, 1006, 1015] {
            let frame = closed(code, Side::Server);
            assert_eq!(frame.code, CloseCode::Error, "{code}");
            assert!(
                frame.reason.starts_with("the relayed connection"),
                "{frame:?}"
            );
            assert_eq!(closed(code, Side::Client).code, CloseCode::Away, "{code}");
        }
        // Codes that may be sent are sent as they are, with their reason.
        let frame = closed(1001, Side::Server);
        assert_eq!(
            (frame.code, frame.reason.as_str()),
            (CloseCode::Away, "why")
        );
        assert_eq!(closed(4000, Side::Client).code, CloseCode::Library(4000));
    }
}
