//! The operator endpoint (`start --admin ADDRESS`): is the engine up, is the namespace loaded,
//! what do its counters say, and profiles of the running process. It is not part of any
//! workflow, and off unless an address is given.
//!
//! | path | answer |
//! |---|---|
//! | `GET /` | a page of the running graph: its nodes and links, with live figures |
//! | `GET /graph` | the running graph as JSON: nodes (name, kind, spec with secrets masked) and links |
//! | `GET /events` | server-sent events, one a second: per node, packets/s, totals and p50/p99 answer times |
//! | `GET /healthz` | 200 `ok` while the process serves |
//! | `GET /readyz` | 200 when the namespace is loaded and every spec runs as stored; 503 with what does not, and why |
//! | `GET /metrics` | the counters in Prometheus's text format |
//! | `GET /debug/pprof/profile?seconds=N` | a CPU profile of the next N seconds (30 by default, at most 300), pprof protobuf |
//! | `GET /debug/pprof/heap` | jemalloc's heap profile (gzipped pprof), when heap profiling is on |
//!
//! With a token configured, every path but `/healthz` and `/readyz` (an orchestrator's
//! probes) needs `Authorization: Bearer <token>`, or `?token=<token>` (a browser cannot set
//! the header on the page's event stream); an address other than loopback requires one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use uniflow_runtime::Live;

mod figures;

/// Where the operator endpoint listens, and the token it asks for.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq, Eq)]
pub struct AdminConfig {
    /// `[admin] address`, `UNIFLOW_ADMIN_ADDRESS`, `start --admin`: off when unset.
    #[serde(default)]
    pub address: Option<String>,
    /// `[admin] token`, `UNIFLOW_ADMIN_TOKEN`: required for an address other than loopback.
    #[serde(default)]
    pub token: Option<String>,
}

/// The running endpoint; it stops when dropped.
pub struct Operator {
    task: JoinHandle<()>,
    address: SocketAddr,
}

impl Operator {
    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Installs the metrics exporter, so that the counters made from now on count. Call it before
/// the namespace loads: a counter made before is a no-op for good.
///
/// # Errors
/// When another exporter is installed already.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    // Answer times span a microsecond (a constant) to seconds (a slow upstream).
    let buckets = [
        1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0, 10.0,
    ];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("uniflow_node_latency_seconds".into()),
            &buckets,
        )
        .context("setting the latency buckets")?
        .install_recorder()
        .context("installing the metrics exporter")
}

/// Checks the configuration: an address that parses, and a token for an address other than
/// loopback.
///
/// # Errors
/// What is wrong, without the token.
pub fn address(config: &AdminConfig) -> anyhow::Result<Option<SocketAddr>> {
    let Some(text) = config
        .address
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    else {
        return Ok(None);
    };
    let address: SocketAddr = text
        .parse()
        .with_context(|| format!("admin address `{text}` is not IP:PORT (e.g. 127.0.0.1:9400)"))?;
    let token = config
        .token
        .as_deref()
        .is_some_and(|t| !t.trim().is_empty());
    if !address.ip().is_loopback() && !token {
        bail!(
            "admin address `{address}` is not loopback: set a token ([admin] token or UNIFLOW_ADMIN_TOKEN), which requests then send as `Authorization: Bearer <token>`"
        );
    }
    Ok(Some(address))
}

/// Starts the endpoint on `address`.
///
/// # Errors
/// When the address cannot be listened on.
pub async fn serve(
    address: SocketAddr,
    token: Option<String>,
    live: Arc<Live>,
    metrics: PrometheusHandle,
) -> anyhow::Result<Operator> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (admin)"))?;
    let address = listener.local_addr()?;
    let state = Arc::new(State {
        token: token.filter(|t| !t.trim().is_empty()),
        live,
        metrics,
    });
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(state.answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    tracing::info!(%address, "operator endpoint listening (/healthz, /readyz, /metrics, /debug/pprof)");
    Ok(Operator { task, address })
}

struct State {
    token: Option<String>,
    live: Arc<Live>,
    metrics: PrometheusHandle,
}

type Answer = Response<BoxBody<Bytes, Infallible>>;

/// The graph page, embedded: it loads nothing from the network.
const PAGE: &str = include_str!("operator/page.html");

impl State {
    async fn answer(self: &Arc<Self>, req: Request<Incoming>) -> Answer {
        let path = req.uri().path();
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        if !matches!(path, "/healthz" | "/readyz") && !self.authorized(&req) {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        }
        match path {
            "/" => {
                let mut response = text(StatusCode::OK, PAGE);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                response
            }
            "/graph" => json(StatusCode::OK, &self.graph()),
            "/events" => self.events(),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => self.ready(),
            "/metrics" => {
                metrics::gauge!("uniflow_processes").set(uniflow_core::Process::alive() as f64);
                let mut response = text(StatusCode::OK, self.metrics.render());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/debug/pprof/profile" => {
                let seconds = query(&req, "seconds").map_or(Ok(30), |s| s.parse::<u64>());
                match seconds {
                    Ok(s) if (1..=300).contains(&s) => {
                        profile(crate::profile::cpu_profile(Duration::from_secs(s)).await)
                    }
                    _ => text(StatusCode::BAD_REQUEST, "seconds must be 1 to 300\n"),
                }
            }
            "/debug/pprof/heap" => profile(crate::profile::heap_profile().await),
            _ => text(StatusCode::NOT_FOUND, "Not Found\n"),
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let given = header.map(str::to_owned).or_else(|| query(req, "token"));
        given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
    }

    /// The running graph: its nodes, with their specs (secret values masked), and links.
    fn graph(&self) -> serde_json::Value {
        let graph = self.live.graph();
        let symbols = graph.symbols();
        let labels: Vec<String> = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| s.spec.label(i))
            .collect();
        // Links name their target by id or by name; one index finds either.
        let mut index: std::collections::HashMap<(bool, &str), &str> =
            std::collections::HashMap::with_capacity(symbols.len() * 2);
        for (s, label) in symbols.iter().zip(&labels) {
            if let Some(id) = &s.spec.id {
                index.insert((true, id), label);
            }
            if let Some(name) = &s.spec.name {
                index.insert((false, name), label);
            }
        }
        let find = |r: &uniflow_spec::PortRef| match (&r.id, &r.name) {
            (Some(id), _) => index.get(&(true, id.as_str())).copied(),
            (None, Some(name)) => index.get(&(false, name.as_str())).copied(),
            (None, None) => None,
        };
        let nodes: Vec<serde_json::Value> = symbols
            .iter()
            .zip(&labels)
            .map(|(s, label)| {
                let spec = serde_json::to_string_pretty(&s.spec.to_value()).unwrap_or_default();
                serde_json::json!({
                    "id": label,
                    "name": label,
                    "kind": s.spec.kind,
                    "spec": self.live.redact(&spec),
                })
            })
            .collect();
        let links: Vec<serde_json::Value> = symbols
            .iter()
            .zip(&labels)
            .flat_map(|(s, label)| {
                s.spec.ports.iter().flat_map(move |(port, refs)| {
                    refs.iter().filter_map(move |r| {
                        find(r).map(|to| {
                            serde_json::json!({"from": label, "port": port, "to": to, "to_port": r.port})
                        })
                    })
                })
            })
            .collect();
        serde_json::json!({
            "namespace": self.live.namespace(),
            "generation": self.live.status().generation,
            "nodes": nodes,
            "links": links,
        })
    }

    /// Server-sent events: the figures of every node, once a second, until the client goes.
    fn events(self: &Arc<Self>) -> Answer {
        let state = Arc::clone(self);
        let ticks = tokio::time::interval(Duration::from_secs(1));
        let stream = futures_util::stream::unfold(
            (state, ticks, figures::Totals::default()),
            |(state, mut ticks, mut totals)| async move {
                ticks.tick().await;
                let status = state.live.status();
                let nodes = totals.next(&state.metrics.render());
                let event = serde_json::json!({
                    "namespace": state.live.namespace(),
                    "generation": status.generation,
                    "ready": status.is_ready(),
                    "nodes": nodes,
                });
                let frame = Frame::data(Bytes::from(format!("data: {event}\n\n")));
                Some((Ok::<_, Infallible>(frame), (state, ticks, totals)))
            },
        );
        let mut response = Response::new(StreamBody::new(stream).boxed());
        for (name, value) in [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ] {
            response
                .headers_mut()
                .insert(name, header::HeaderValue::from_static(value));
        }
        response
    }

    fn ready(&self) -> Answer {
        let status = self.live.status();
        let not_ready: Vec<serde_json::Value> = status
            .not_ready
            .iter()
            .map(|n| serde_json::json!({"spec": n.spec, "why": n.why}))
            .collect();
        let body = serde_json::json!({
            "ready": status.is_ready(),
            "generation": status.generation,
            "not_ready": not_ready,
        });
        let code = if status.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json(code, &body)
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> Answer {
    let mut response = text(status, format!("{body}\n"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Compares without stopping at the first difference, so the time taken does not tell how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The first value of `key` in the query string, decoded.
fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn profile(result: anyhow::Result<Vec<u8>>) -> Answer {
    match result {
        Ok(bytes) => {
            let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        Err(e) => text(StatusCode::NOT_IMPLEMENTED, format!("{e:#}\n")),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response
}
