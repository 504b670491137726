//! `proxy`: a reverse proxy. Each request payload is sent to the next of `urls` in turn
//! (round robin, starting at the first; upstream started at the second) and the upstream's
//! response becomes the answer.
//!
//! The outgoing request keeps the payload's method, path (joined behind the URL's path),
//! query (the URL's query added) and headers, less hop-by-hop headers, and gains
//! `X-Forwarded-For` (the client's address appended to any list the request brought),
//! `X-Forwarded-Host` (the request's `Host`) and `X-Forwarded-Proto` (`http` or `https`, as
//! the listener serves). The answer is `{method, scheme, host, path, query, protocol, header,
//! body, status}` like `http`'s, with the response body decoded. When nothing can look at the
//! answer before the listener sends it (see `listener`), the body is not decoded at all but
//! passed through to the client as it arrives. Transport failures go to `error`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use uniflow_core::{
    CompileCx, Cx, Flow, Graph, InPort, LoadCx, Needs, Node, NodeId, NodeSpec, OutPort, Packet,
    Process, shape,
};
use uniflow_spec::Diagnostic;
use uniflow_value::{ErrorValue, Map, Value};

use crate::client::{Outgoing, Target, answer, error_text, outgoing, strip_hop_by_hop};
use crate::exchange::peer;
use crate::payload::header_map;
use crate::tls;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

type Upstream = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The fields of a `proxy` spec.
#[derive(Debug, Deserialize)]
pub struct ProxySpec {
    /// The upstreams, used in turn: absolute `http://` or `https://` URLs.
    #[serde(default)]
    pub urls: Vec<String>,
    /// How long a whole exchange may take (nanoseconds, or a string such as `"30s"`); no limit
    /// when unset or zero. Not in upstream's spec.
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub timeout: Option<Duration>,
}

impl NodeSpec for ProxySpec {
    const KIND: &'static str = "proxy";

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        if self.urls.is_empty() {
            problems.push(cx.error("urls", "at least one URL is required"));
        }
        let mut targets = Vec::with_capacity(self.urls.len());
        for (i, url) in self.urls.iter().enumerate() {
            match Target::parse(url) {
                Ok(t) if t.authority.is_some() && t.scheme.is_some() => targets.push(t),
                Ok(_) => problems.push(cx.error(
                    format!("urls[{i}]"),
                    format!("`{url}` is not an absolute http(s) URL"),
                )),
                Err(e) => problems.push(cx.error(format!("urls[{i}]"), e)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls::client_config()).clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        // A hyper client rather than reqwest: no redirects to follow (they go back to the
        // client), no URL re-parsing, and the response body can be passed on as it arrives.
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Box::new(ProxyNode {
            targets,
            next: AtomicUsize::new(0),
            client,
            timeout: self.timeout.filter(|t| !t.is_zero()),
            streams: AtomicBool::new(false),
        }))
    }
}

/// The compiled `proxy`.
pub struct ProxyNode {
    targets: Vec<Target>,
    next: AtomicUsize,
    client: Upstream,
    timeout: Option<Duration>,
    /// Set at load when every path into this node hands its answer to a source (a listener)
    /// untouched; the body is then streamed instead of decoded.
    streams: AtomicBool,
}

impl ProxyNode {
    /// Whether response bodies are streamed to the listener rather than decoded.
    pub fn streams(&self) -> bool {
        self.streams.load(Ordering::Relaxed)
    }
}

impl ProxyNode {
    /// Sends the request; answers the decoded response, or, when streaming, a payload whose
    /// body stays with the process for the listener to send.
    async fn exchange(&self, proc: &Arc<Process>, out: Outgoing) -> Result<Value, ErrorValue> {
        let mut request = Request::new(Full::new(out.body));
        *request.method_mut() = out.method;
        *request.uri_mut() = out.uri;
        *request.headers_mut() = out.headers;
        crate::trace::inject(request.headers_mut());
        let sent = self.client.request(request);
        let response = match self.timeout {
            None => sent.await,
            Some(limit) => tokio::time::timeout(limit, sent)
                .await
                .map_err(|_| ErrorValue::new(format!("proxy: no response within {limit:?}")))?,
        }
        .map_err(|e| ErrorValue::new(format!("proxy: {}", error_text(&e))))?;
        let (mut parts, body) = response.into_parts();
        if self.streams() {
            strip_hop_by_hop(&mut parts.headers);
            let payload = Value::Map(Map::from([
                ("body", Value::Bytes(Bytes::new())),
                ("header", Value::Map(header_map(&parts.headers))),
                ("status", Value::Int(i64::from(parts.status.as_u16()))),
            ]));
            crate::exchange::leave_stream(proc, &payload, Response::from_parts(parts, body));
            return Ok(payload);
        }
        let collect = body.collect();
        let bytes = match self.timeout {
            None => collect.await,
            Some(limit) => tokio::time::timeout(limit, collect).await.map_err(|_| {
                ErrorValue::new(format!("proxy: no whole response within {limit:?}"))
            })?,
        }
        .map_err(|e| ErrorValue::new(format!("proxy: {}", error_text(&e))))?
        .to_bytes();
        answer(out.echo, parts.status, &mut parts.headers, bytes)
    }
}

/// Whether the answers of node `node` of `graph` leave the graph untouched: every link into
/// it comes, through a port with no other link, from a node whose answers leave the graph (a
/// listener) or from one that relays answers (a router) whose own answers do, and its `out`
/// is unlinked (so its answer is its payload). Then a proxy may stream its response body.
fn answers_leave_untouched(graph: &Graph, node: NodeId) -> bool {
    if !graph.targets(node, shape::OUT).is_empty() {
        return false;
    }
    let n = graph.symbols().len();
    // Per node, the links into it: (source, how many links its port has).
    let mut into: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
    for from in 0..n {
        let id = NodeId(from as u32);
        for port in 0..graph.port_slots(id) {
            let targets = graph.targets(id, OutPort(port as u32));
            // Links may lead beyond the symbols (a stand-in for a missing node, a debugger's
            // tap): no source is found through them, so the proxy does not stream.
            for t in targets {
                if let Some(into) = into.get_mut(t.node.0 as usize) {
                    into.push((from, targets.len()));
                }
            }
        }
    }
    reaches_source(graph, &into, node.0 as usize, &mut vec![false; n])
}

fn reaches_source(
    graph: &Graph,
    into: &[Vec<(usize, usize)>],
    node: usize,
    seen: &mut Vec<bool>,
) -> bool {
    if seen[node] {
        // A cycle of relays: not a path from a source.
        return false;
    }
    seen[node] = true;
    !into[node].is_empty()
        && into[node].iter().all(|&(from, links)| {
            let source = &*graph.symbols()[from].node;
            links == 1
                && (source.answers_leave()
                    || (source.relays_answers() && reaches_source(graph, into, from, seen)))
        })
}

impl Node for ProxyNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        shape::in_port(name)
    }

    /// The client's address for `X-Forwarded-For`, and room to leave a streamed response.
    fn needs(&self) -> Needs {
        Needs::NONE.peer().streams()
    }

    fn load(&self, cx: LoadCx) -> Result<(), uniflow_core::Error> {
        let streams = answers_leave_untouched(&cx.graph, cx.node);
        self.streams.store(streams, Ordering::Relaxed);
        Ok(())
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        shape::out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(input) = packet else {
            return Flow::Ready(Packet::None);
        };
        if !matches!(input, Value::Map(_)) {
            let e = format!(
                "proxy: the input must be an HTTP payload, not {}",
                input.kind_name()
            );
            return cx.send(shape::ERROR, Value::Error(ErrorValue::new(e)));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len();
        let mut out = match outgoing(&self.targets[i], &input) {
            Ok(out) => out,
            Err(e) => return cx.send(shape::ERROR, Value::Error(ErrorValue::new(e))),
        };
        let host = input.get("host").and_then(Value::as_str).unwrap_or("");
        let client = peer(cx.proc());
        let mut forwarded_for = out
            .headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(client) = &client {
            if !forwarded_for.is_empty() {
                forwarded_for.push_str(", ");
            }
            forwarded_for.push_str(&client.addr.ip().to_string());
        }
        let proto = if client.is_some_and(|c| c.tls) {
            "https"
        } else {
            "http"
        };
        let headers = &mut out.headers;
        headers.remove(X_FORWARDED_FOR);
        if let Ok(v) = HeaderValue::try_from(forwarded_for)
            && !v.is_empty()
        {
            headers.insert(X_FORWARDED_FOR, v);
        }
        match HeaderValue::from_str(host) {
            Ok(v) if !host.is_empty() => {
                headers.insert(X_FORWARDED_HOST, v);
            }
            _ => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        Flow::pending(async move {
            match self.exchange(cx.proc(), out).await {
                Ok(answer) => cx.send(shape::OUT, answer).await,
                Err(e) => cx.send(shape::ERROR, Value::Error(e)).await,
            }
        })
    }
}
