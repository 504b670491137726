//! `gateway`: upgrades the request in its process to a WebSocket connection, then exchanges
//! messages on it with the `io`/`in`/`out`/`error` contract of `ws`.
//!
//! `io` takes the request payload, checks that it asks for a WebSocket (`Upgrade: websocket`,
//! `Sec-WebSocket-Version: 13`, a `Sec-WebSocket-Key`) and claims the connection from the
//! listener, which then sends the `101 Switching Protocols` handshake instead of a response
//! built from the answer (upstream's gateway took the listener's response writer), unless
//! the flow's answer is a failure (an error: 502; a status of 400 or more: that answer). A
//! request that is not a WebSocket upgrade goes to `error`; with `error` unlinked it answers
//! 400.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use uniflow_core::{CompileCx, Cx, Flow, InPort, Needs, Node, NodeSpec, OutPort, Packet};
use uniflow_spec::Diagnostic;
use uniflow_value::{Map, Value};

use crate::payload::Body;
use crate::upgrade;
use crate::ws::{self, Connections, Side};

/// The fields of a `gateway` spec.
#[derive(Debug, Deserialize)]
pub struct GatewaySpec {
    /// Only `websocket`.
    pub protocol: String,
    /// How long the client may take to complete the upgrade once the handshake is sent
    /// (nanoseconds, or a string such as `"10s"`); no limit when unset or zero.
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub timeout: Option<Duration>,
    /// The read and write buffer size in bytes; the protocol library's default when unset.
    #[serde(default)]
    pub buffer: Option<usize>,
}

impl NodeSpec for GatewaySpec {
    const KIND: &'static str = "gateway";

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        if self.protocol != "websocket" {
            return Err(vec![cx.error(
                "protocol",
                format!("unsupported protocol `{}`: only `websocket`", self.protocol),
            )]);
        }
        Ok(Box::new(GatewayNode {
            timeout: self.timeout.filter(|t| !t.is_zero()),
            connections: Connections::new(Side::Server, self.buffer),
        }))
    }
}

/// The compiled `gateway`.
pub struct GatewayNode {
    timeout: Option<Duration>,
    connections: Connections,
}

impl GatewayNode {
    fn upgrade<'a>(&'a self, cx: Cx<'a>, packet: Packet) -> Flow<'a> {
        let Packet::Data(request) = packet else {
            return Flow::Ready(Packet::None);
        };
        let key = match handshake_key(&request) {
            Ok(key) => key,
            Err(why) => return refuse(cx, why),
        };
        let accept = HeaderValue::try_from(derive_accept_key(key.as_bytes()))
            .expect("a base64 accept key is a valid header value");
        let mut handshake = Response::new(Body::empty());
        *handshake.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = handshake.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        let Some(pending) = upgrade::claim(cx.proc(), handshake) else {
            return refuse(
                cx,
                "the connection cannot be upgraded (not HTTP/1.1, or already taken)".to_owned(),
            );
        };
        let config = self.connections.config();
        let timeout = self.timeout;
        let open = async move {
            let upgraded = match timeout {
                None => pending.await,
                Some(limit) => match tokio::time::timeout(limit, pending).await {
                    Ok(upgraded) => upgraded,
                    Err(_) => {
                        tracing::debug!("websocket upgrade timed out");
                        return None;
                    }
                },
            };
            match upgraded {
                Ok(io) => Some(
                    WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, Some(config))
                        .await,
                ),
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    None
                }
            }
        };
        self.connections.open(cx.detach(), cx.proc(), open);
        Flow::Ready(Packet::None)
    }
}

/// The `Sec-WebSocket-Key` of a request payload that asks for a WebSocket.
fn handshake_key(request: &Value) -> Result<String, String> {
    let header = |name: &str| -> Option<String> {
        let map = request.get("header")?.as_map()?;
        let (_, values) = map
            .iter()
            .find(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))?;
        match values {
            Value::List(l) => l.first()?.as_str().map(str::to_owned),
            v => v.as_str().map(str::to_owned),
        }
    };
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("GET");
    if method != "GET" {
        return Err(format!("a WebSocket handshake is a GET, not {method}"));
    }
    let upgrade = header("Upgrade").unwrap_or_default();
    if !upgrade
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
    {
        return Err("the request does not ask for `Upgrade: websocket`".to_owned());
    }
    if header("Sec-WebSocket-Version").as_deref().map(str::trim) != Some("13") {
        return Err("only `Sec-WebSocket-Version: 13` is supported".to_owned());
    }
    header("Sec-WebSocket-Key")
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| "the request has no `Sec-WebSocket-Key`".to_owned())
}

/// Sends a failed handshake to `error`; with `error` unlinked the request answers 400, as a
/// failed upgrade did upstream.
fn refuse(cx: Cx<'_>, why: String) -> Flow<'_> {
    if cx.is_linked(ws::ERROR) {
        return ws::fail(cx, format!("gateway: {why}"));
    }
    tracing::debug!(%why, "refusing a websocket upgrade");
    Flow::Ready(Packet::Data(Value::Map(Map::from([
        ("body", Value::from("Bad Request")),
        ("status", Value::Int(400)),
    ]))))
}

impl Node for GatewayNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        ws::in_port(name)
    }

    /// It takes the request's connection over for the WebSocket.
    fn needs(&self) -> Needs {
        Needs::NONE.connection()
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        ws::out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, port: InPort, packet: Packet) -> Flow<'a> {
        if port == ws::IO {
            self.upgrade(cx, packet)
        } else {
            ws::send(cx, &self.connections, packet)
        }
    }

    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.connections.close()
    }
}
