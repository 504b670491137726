//! `http`: an HTTP client. The input (an HTTP payload, or any value as the body) becomes a
//! request to `url`; the response becomes the output payload.
//!
//! The node's `url` overrides the payload's scheme and host, its path is joined in front of the
//! payload's path and its query is added to the payload's. The method
//! defaults to GET without a body and POST with one; the body is encoded by the payload's
//! `Content-Type` (or the type its kind suggests) and `Content-Encoding`. The answer on `out` is
//! `{method, scheme, host, path, query, protocol, header, body, status}` with the response's
//! header, decoded body and status; any status is an answer, not an error. A transport failure
//! or `timeout` goes to `error`. Connections are pooled per node and host.

use std::time::Duration;

use serde::Deserialize;
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, shape};
use uniflow_spec::Diagnostic;
use uniflow_value::{ErrorValue, Value};

use crate::client::{Target, error_text, exchange, outgoing};

/// The fields of an `http` spec.
#[derive(Debug, Deserialize)]
pub struct HttpSpec {
    /// Where requests go: an absolute URL (`https://api.example.com/v1`), or a path whose host
    /// the payload gives.
    pub url: Option<String>,
    /// How long a whole exchange may take (nanoseconds, or a string such as `"5s"`); no limit
    /// when unset or zero.
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub timeout: Option<Duration>,
}

impl NodeSpec for HttpSpec {
    const KIND: &'static str = "http";

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let target = match self.url.as_deref() {
            None => {
                problems.push(cx.error("url", "missing required field"));
                None
            }
            Some(url) => Target::parse(url)
                .map_err(|e| problems.push(cx.error("url", e)))
                .ok(),
        };
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| problems.push(cx.error("url", error_text(&e))))
            .ok();
        match (target, client) {
            (Some(target), Some(client)) if problems.is_empty() => Ok(Box::new(HttpNode {
                target,
                client,
                timeout: self.timeout.filter(|t| !t.is_zero()),
            })),
            _ => Err(problems),
        }
    }
}

/// The compiled `http`.
pub struct HttpNode {
    target: Target,
    client: reqwest::Client,
    timeout: Option<Duration>,
}

impl Node for HttpNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        shape::in_port(name)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        shape::out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(input) = packet else {
            return Flow::Ready(Packet::None);
        };
        let out = match outgoing(&self.target, &input) {
            Ok(out) => out,
            Err(e) => return cx.send(shape::ERROR, Value::Error(ErrorValue::new(e))),
        };
        Flow::pending(async move {
            match exchange(&self.client, out, self.timeout).await {
                Ok(answer) => cx.send(shape::OUT, answer).await,
                Err(e) => cx.send(shape::ERROR, Value::Error(e)).await,
            }
        })
    }
}
