//! `websocket`: a WebSocket client. `io` dials `url` for the process it arrives in, then
//! messages flow with the `io`/`in`/`out`/`error` contract of `ws`.
//!
//! The URL is the node's, with parts it leaves out (scheme, host, path, query) taken from the
//! payload when it is an HTTP payload, as upstream did. `wss://` uses the platform's root
//! certificates. A connection that cannot be opened within `timeout` (10 seconds unless set)
//! goes to `error`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;
use tokio_tungstenite::Connector;
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet};
use uniflow_spec::Diagnostic;
use uniflow_value::Value;

use crate::client::error_text;
use crate::tls;
use crate::ws::{self, Connections, Side};

/// The fields of a `websocket` spec.
#[derive(Debug, Deserialize)]
pub struct WebSocketSpec {
    /// Where to connect: `ws://` or `wss://`.
    pub url: Option<String>,
    /// How long opening a connection (TCP, TLS and the WebSocket handshake) may take
    /// (nanoseconds, or a string such as `"10s"`); [`DEFAULT_TIMEOUT`] when unset, no limit
    /// when zero.
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub timeout: Option<Duration>,
}

/// How long opening a connection may take when the spec does not say: an unreachable server
/// must not hold the request (and, behind a `gateway`, the client's upgrade) for the minutes
/// the system's TCP retries take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of the node's URL.
#[derive(Debug, Default)]
struct Parts {
    scheme: Option<String>,
    authority: Option<String>,
    path: Option<String>,
    query: Option<String>,
}

impl NodeSpec for WebSocketSpec {
    const KIND: &'static str = "websocket";

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let Some(url) = self.url else {
            return Err(vec![cx.error("url", "missing required field")]);
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| vec![cx.error("url", format!("`{url}` is not a URL: {e}"))])?;
        let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
        if let Some(s) = scheme.as_deref()
            && s != "ws"
            && s != "wss"
        {
            return Err(vec![
                cx.error("url", format!("unsupported scheme `{s}`: use ws or wss")),
            ]);
        }
        // `wss://host` names no path (the payload's is used); `wss://host/` names `/`.
        let after_authority = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let names_path = !url.contains("://") || after_authority.contains('/');
        let parts = Parts {
            scheme,
            authority: uri.authority().map(|a| a.as_str().to_owned()),
            path: names_path.then(|| uri.path().to_owned()),
            query: uri.query().map(str::to_owned),
        };
        Ok(Box::new(WebSocketNode {
            parts,
            timeout: match self.timeout {
                None => Some(DEFAULT_TIMEOUT),
                Some(t) if t.is_zero() => None,
                given => given,
            },
            connections: Connections::new(Side::Client, None),
        }))
    }
}

/// The compiled `websocket`.
pub struct WebSocketNode {
    parts: Parts,
    timeout: Option<Duration>,
    connections: Connections,
}

impl WebSocketNode {
    /// How long opening a connection may take; `None` for no limit.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The URL to dial for `payload`: the node's parts, the payload's where the node has none.
    fn url(&self, payload: &Value) -> Result<String, String> {
        let field = |k: &str| {
            payload
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let scheme = self
            .parts
            .scheme
            .clone()
            .or_else(|| field("scheme").map(str::to_owned))
            .unwrap_or_else(|| "ws".to_owned());
        let host = self
            .parts
            .authority
            .clone()
            .or_else(|| field("host").map(str::to_owned))
            .ok_or("no host: the node's `url` names none and the payload has no `host`")?;
        let path = self
            .parts
            .path
            .clone()
            .or_else(|| field("path").map(str::to_owned))
            .unwrap_or_else(|| "/".to_owned());
        let query = match &self.parts.query {
            Some(q) => q.clone(),
            None => match payload.get("query") {
                Some(Value::Map(m)) => crate::payload::form_text(m),
                _ => String::new(),
            },
        };
        Ok(if query.is_empty() {
            format!("{scheme}://{host}{path}")
        } else {
            format!("{scheme}://{host}{path}?{query}")
        })
    }

    fn dial<'a>(&'a self, cx: Cx<'a>, packet: Packet) -> Flow<'a> {
        let Packet::Data(payload) = packet else {
            return Flow::Ready(Packet::None);
        };
        let url = match self.url(&payload) {
            Ok(url) => url,
            Err(e) => return ws::fail(cx, format!("websocket: {e}")),
        };
        Flow::pending(async move {
            let connect = tokio_tungstenite::connect_async_tls_with_config(
                url.as_str(),
                Some(self.connections.config()),
                true,
                Some(Connector::Rustls(tls::client_config())),
            );
            let connected = match self.timeout {
                None => connect.await.map_err(|e| error_text(&e)),
                Some(limit) => match tokio::time::timeout(limit, connect).await {
                    Ok(result) => result.map_err(|e| error_text(&e)),
                    Err(_) => Err(format!("no connection within {limit:?}")),
                },
            };
            match connected {
                Ok((stream, _)) => {
                    let open = async move { Some(stream) };
                    self.connections.open(cx.detach(), cx.proc(), open);
                    Packet::None
                }
                Err(e) => {
                    let url = shown(&url);
                    ws::fail(cx, format!("websocket: cannot connect to {url}: {e}")).await
                }
            }
        })
    }
}

/// `url` as errors (and so logs) show it: without credentials or a query, which may carry
/// secrets.
fn shown(url: &str) -> String {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return "the URL".to_owned();
    };
    let port = uri.port().map_or_else(String::new, |p| format!(":{p}"));
    format!(
        "{}://{}{port}{}",
        uri.scheme_str().unwrap_or("ws"),
        uri.host().unwrap_or(""),
        uri.path()
    )
}

impl Node for WebSocketNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        ws::in_port(name)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        ws::out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, port: InPort, packet: Packet) -> Flow<'a> {
        if port == ws::IO {
            self.dial(cx, packet)
        } else {
            ws::send(cx, &self.connections, packet)
        }
    }

    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.connections.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_a_url_without_its_secrets() {
        assert_eq!(
            shown("wss://user:pass@echo.example:8443/chat?token=abc"),
            "wss://echo.example:8443/chat"
        );
        assert_eq!(shown("ws://127.0.0.1/"), "ws://127.0.0.1/");
    }

    #[test]
    fn a_payload_query_is_written_like_a_form_numbers_included() {
        let node = WebSocketNode {
            parts: Parts {
                scheme: Some("ws".to_owned()),
                authority: Some("h:1".to_owned()),
                ..Parts::default()
            },
            timeout: None,
            connections: Connections::new(Side::Client, None),
        };
        let payload: Value =
            yaml_serde::from_str("{path: /chat, query: {room: [a b, c], page: 2}}").unwrap();
        assert_eq!(
            node.url(&payload).unwrap(),
            "ws://h:1/chat?page=2&room=a+b&room=c"
        );
    }
}
