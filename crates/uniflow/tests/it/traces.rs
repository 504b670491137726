//! Traces (`[telemetry] otlp_endpoint`): a collector on 127.0.0.1 receives, over OTLP/HTTP,
//! the spans of requests through listener -> router -> nodes, continuing the caller's
//! `traceparent` and sending it on through `http`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::Command;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::support::{Instance, Server, free_port, get};

/// A collector that keeps every span it is sent.
struct Collector {
    port: u16,
    spans: mpsc::UnboundedReceiver<Span>,
    seen: Vec<Span>,
    paths: mpsc::UnboundedReceiver<String>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (spans_tx, spans) = mpsc::unbounded_channel();
        let (paths_tx, paths) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (spans_tx, paths_tx) = (spans_tx.clone(), paths_tx.clone());
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let (spans_tx, paths_tx) = (spans_tx.clone(), paths_tx.clone());
                    async move {
                        let _ = paths_tx.send(req.uri().path().to_owned());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        for resource in export.resource_spans {
                            for scope in resource.scope_spans {
                                for span in scope.spans {
                                    let _ = spans_tx.send(span);
                                }
                            }
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Collector {
            port,
            spans,
            seen: Vec::new(),
            paths,
        }
    }

    /// Waits (at most 30 s) until the spans seen so far satisfy `done`; fails naming `what`
    /// when they never do.
    async fn until(&mut self, what: &str, done: impl Fn(&[Span]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.spans.recv()).await {
                Ok(Some(span)) => self.seen.push(span),
                _ => panic!(
                    "never saw {what}; saw {:?}",
                    self.seen.iter().map(|s| &s.name).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Waits until the spans of trace `trace_id` include every name in `names`; returns them.
    async fn trace(&mut self, trace_id: &[u8], names: &[&str]) -> Vec<Span> {
        let mut wanted: HashMap<&str, usize> = HashMap::new();
        for name in names {
            *wanted.entry(name).or_default() += 1;
        }
        let complete = |seen: &[Span]| {
            wanted.iter().all(|(name, n)| {
                seen.iter()
                    .filter(|s| s.trace_id == trace_id && s.name == *name)
                    .count()
                    >= *n
            })
        };
        let what = format!("trace {} with {names:?}", hex(trace_id));
        self.until(&what, complete).await;
        self.seen
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` span: {spans:#?}");
    found[0]
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

async fn start(specs: &str, port: u16, env: &[(&str, String)]) -> Server {
    let dir = std::env::temp_dir().join(format!("uniflow-traces-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("specs.yaml"), specs).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_uniflow"));
    command
        .current_dir(&dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        // Batches leave every 100 ms rather than every 5 s, so the test need not wait.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .args([
            "--log-format",
            "json",
            "start",
            "--from-specs",
            "specs.yaml",
        ]);
    let instance = Instance::spawn(command, dir.join("log"), &[port]).await;
    Server { instance, dir }
}

/// listener -> router -> {pong | a call of /ping through `http` | a throw}.
fn specs(port: u16) -> String {
    format!(
        "- {{kind: listener, name: listener, protocol: http, port: {port}, ports: {{out: [{{name: router, port: in}}]}}}}\n\
         - kind: router\n  name: router\n  routes:\n\
         \x20   - {{method: GET, path: /ping, port: 'out[0]'}}\n\
         \x20   - {{method: GET, path: /chain, port: 'out[1]'}}\n\
         \x20   - {{method: GET, path: /fail, port: 'out[2]'}}\n\
         \x20 ports: {{'out[0]': [{{name: pong, port: in}}], 'out[1]': [{{name: ask, port: in}}], 'out[2]': [{{name: fail, port: in}}]}}\n\
         - {{kind: snippet, name: pong, language: text, code: pong}}\n\
         - {{kind: snippet, name: ask, language: json, code: '{{\"method\": \"GET\", \"path\": \"/ping\"}}', ports: {{out: [{{name: call, port: in}}]}}}}\n\
         - {{kind: http, name: call, url: 'http://127.0.0.1:{port}'}}\n\
         - {{kind: throw, name: fail}}\n"
    )
}

#[tokio::test]
async fn spans_of_requests_reach_the_collector_with_their_parents() {
    let mut collector = Collector::start().await;
    let port = free_port();
    let server = start(
        &specs(port),
        port,
        &[(
            "UNIFLOW_TELEMETRY_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", collector.port),
        )],
    )
    .await;

    // A caller that decided not to sample: nothing is recorded for its trace.
    let unsampled = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{unsampled}-00f067aa0ba902b7-00");
    assert_eq!(
        get(port, "/ping", &[("traceparent".into(), parent)]).await,
        (200, b"pong".to_vec())
    );

    // A sampled caller: listener, router and snippet spans, the first a child of the caller's.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let caller = "b7ad6b7169203331";
    let parent = format!("00-{trace}-{caller}-01");
    assert_eq!(
        get(port, "/ping", &[("traceparent".into(), parent)]).await,
        (200, b"pong".to_vec())
    );
    let spans = collector
        .trace(&unhex(trace), &["GET", "router", "pong"])
        .await;
    let request = one(&spans, "GET");
    assert_eq!(request.parent_span_id, unhex(caller), "{request:#?}");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(attribute(request, "url.path").as_deref(), Some("/ping"));
    assert_eq!(
        attribute(request, "http.response.status_code").as_deref(),
        Some("200")
    );
    let router = one(&spans, "router");
    assert_eq!(router.parent_span_id, request.span_id);
    assert_eq!(
        attribute(router, "uniflow.node.kind").as_deref(),
        Some("router")
    );
    let pong = one(&spans, "pong");
    assert_eq!(pong.parent_span_id, router.span_id);
    assert_eq!(
        attribute(pong, "uniflow.node.kind").as_deref(),
        Some("snippet")
    );
    for span in [request, router, pong] {
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    }
    assert!(
        collector
            .seen
            .iter()
            .all(|s| s.trace_id != unhex(unsampled)),
        "the unsampled caller's trace was recorded"
    );

    // No caller: a new trace (the ratio is 1 by default), sent on by `http` to the second
    // request, whose listener span is the `http` node's child.
    assert_eq!(get(port, "/chain", &[]).await, (200, b"pong".to_vec()));
    let is_call = |s: &Span| s.name == "call";
    collector
        .until("the `http` node's span", |seen| seen.iter().any(is_call))
        .await;
    let chain = collector.seen.iter().find(|s| is_call(s)).unwrap().clone();
    let spans = collector
        .trace(
            &chain.trace_id,
            &["GET", "GET", "router", "router", "ask", "call", "pong"],
        )
        .await;
    let inner = spans
        .iter()
        .find(|s| s.name == "GET" && s.parent_span_id == chain.span_id)
        .unwrap_or_else(|| panic!("no request span under `call`: {spans:#?}"));
    assert_eq!(attribute(inner, "url.path").as_deref(), Some("/ping"));
    let outer = spans
        .iter()
        .find(|s| s.name == "GET" && attribute(s, "url.path").as_deref() == Some("/chain"))
        .expect("the /chain request span");
    assert!(outer.parent_span_id.is_empty(), "a root: {outer:#?}");

    // A failing request: its spans say so, and its log line carries the trace id.
    let trace = "11111111111111111111111111111111";
    let parent = format!("00-{trace}-2222222222222222-01");
    let (status, _) = get(port, "/fail", &[("traceparent".into(), parent)]).await;
    assert_eq!(status, 500);
    let spans = collector
        .trace(&unhex(trace), &["GET", "router", "fail"])
        .await;
    let fail = one(&spans, "fail");
    let status = fail.status.as_ref().expect("a status");
    assert_eq!(status.code, StatusCode::Error as i32, "{fail:#?}");
    assert_eq!(
        attribute(one(&spans, "GET"), "http.response.status_code").as_deref(),
        Some("500")
    );
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("unhandled error"))
        .unwrap_or_else(|| panic!("no log line of the failure:\n{log}"));
    let object: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(object["span"]["trace_id"], trace, "{line}");

    // A malformed `traceparent` is ignored: the request starts a trace of its own.
    let (status, _) = get(
        port,
        "/ping",
        &[("traceparent".into(), "00-nonsense-01".into())],
    )
    .await;
    assert_eq!(status, 200);
    let is_root_ping = |s: &Span| {
        s.name == "GET"
            && s.parent_span_id.is_empty()
            && attribute(s, "url.path").as_deref() == Some("/ping")
    };
    collector
        .until("a root span for the malformed traceparent", |seen| {
            seen.iter().any(is_root_ping)
        })
        .await;

    assert_eq!(collector.paths.recv().await.as_deref(), Some("/v1/traces"));
}

#[tokio::test]
async fn a_malformed_endpoint_stops_start_with_the_field() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("uniflow-traces-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("specs.yaml"), specs(port)).unwrap();
    std::fs::write(
        dir.join(".uniflow.toml"),
        "[telemetry]\notlp_endpoint = \"collector:4318\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_uniflow"))
        .current_dir(&dir)
        .args(["start", "--from-specs", "specs.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("telemetry.otlp_endpoint"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
