//! Fixtures shared by the wall-clock (divan) and instruction-count (gungraun) benchmarks, so
//! both measure exactly the same code paths.
//!
//! Every fixture runs synchronously: the paths measured here never wait, so their flows are
//! `Flow::Ready` and need no async runtime.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use uniflow_core::{Cx, Flow, Graph, NodeId, Packet, Process, Registry, shape};
use uniflow_lang::Languages;
use uniflow_spec::{Format, Spec, parse};
use uniflow_value::Value;

/// Every kind, plus the test kinds.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    uniflow_core::testing::register(&mut registry);
    uniflow_nodes_control::register(&mut registry, Arc::new(Languages::default()));
    uniflow_nodes_net::register(&mut registry);
    registry
}

/// Parses YAML specs.
///
/// # Panics
/// On invalid specs: fixtures are fixed text.
pub fn specs(yaml: &str) -> Vec<Spec> {
    parse(yaml, Format::Yaml, None).unwrap_or_else(|d| panic!("{d}"))
}

/// Compiles YAML specs into a graph.
///
/// # Panics
/// On invalid specs.
pub fn graph(yaml: &str) -> Arc<Graph> {
    Graph::compile(specs(yaml), &registry(), &|_, _| None).unwrap_or_else(|d| panic!("{d}"))
}

/// A graph, an entry node and a payload: one write into the entry node's `in` port.
pub struct Fixture {
    /// The graph.
    pub graph: Arc<Graph>,
    /// The entry node.
    pub entry: NodeId,
    /// What is written.
    pub payload: Value,
}

impl Fixture {
    /// A fixture entering at the node named `entry`.
    ///
    /// # Panics
    /// When `entry` is not in the graph.
    pub fn new(yaml: &str, entry: &str, payload: Value) -> Fixture {
        let graph = graph(yaml);
        let entry = graph.find(entry).expect("entry node");
        Fixture {
            graph,
            entry,
            payload,
        }
    }

    /// Handles one packet at the entry node within `proc`; the answer must be ready.
    ///
    /// # Panics
    /// When the flow waits (the fixtures are all synchronous).
    #[inline]
    pub fn run_in(&self, proc: &Arc<Process>) -> Packet {
        let node = self.graph.node(self.entry);
        match node.handle(
            Cx::new(&self.graph, proc, self.entry),
            shape::IN,
            Packet::Data(self.payload.clone()),
        ) {
            Flow::Ready(p) => p,
            Flow::Pending(_) => panic!("benchmark fixtures must not wait"),
        }
    }

    /// One packet in a new process, which then exits.
    #[inline]
    pub fn run(&self) -> Packet {
        let proc = Process::new();
        let answer = self.run_in(&proc);
        proc.exit(None);
        answer
    }
}

/// One hop: `a` (echo) writes to `b` (echo), whose `out` is unlinked.
pub fn hop() -> Fixture {
    Fixture::new(
        "- {kind: test-echo, name: a, ports: {out: [{name: b, port: in}]}}\n- {kind: test-echo, name: b}\n",
        "a",
        Value::from("ping"),
    )
}

/// An echo node whose `out` fans out to `n` echo nodes.
pub fn fan_out(n: usize) -> Fixture {
    let targets: Vec<String> = (0..n)
        .map(|i| format!("{{name: t{i}, port: in}}"))
        .collect();
    let mut yaml = format!(
        "- {{kind: test-echo, name: a, ports: {{out: [{}]}}}}\n",
        targets.join(", ")
    );
    for i in 0..n {
        yaml.push_str(&format!("- {{kind: test-echo, name: t{i}}}\n"));
    }
    Fixture::new(&yaml, "a", Value::from("ping"))
}

/// A router with `n` routes (`/r0/:id` ... plus `/ping`), matching `GET /ping`.
pub fn router(n: usize) -> Fixture {
    let mut routes = vec!["{method: GET, path: /ping, port: 'out[0]'}".to_owned()];
    for i in 1..n {
        routes.push(format!(
            "{{method: GET, path: '/r{i}/:id', port: 'out[0]'}}"
        ));
    }
    let yaml = format!(
        "- {{kind: router, name: router, routes: [{}], ports: {{'out[0]': [{{name: sink, port: in}}]}}}}\n- {{kind: nop, name: sink}}\n",
        routes.join(", ")
    );
    let request = Value::Map(
        [
            ("method", Value::from("GET")),
            ("path", Value::from("/ping")),
        ]
        .into(),
    );
    Fixture::new(&yaml, "router", request)
}

/// A snippet in `language` with `code`.
pub fn snippet(language: &str, code: &str) -> Fixture {
    Fixture::new(
        &format!("- {{kind: snippet, name: s, language: {language}, code: '{code}'}}\n"),
        "s",
        Value::Null,
    )
}

/// A snippet run on `payload`.
pub fn snippet_on(language: &str, code: &str, payload: Value) -> Fixture {
    let mut f = snippet(language, code);
    f.payload = payload;
    f
}

/// An `if` whose CEL condition holds, writing to an echo on `out[0]`.
pub fn r#if() -> Fixture {
    Fixture::new(
        "- {kind: if, name: a, when: 'self == 1', ports: {'out[0]': [{name: t, port: in}], 'out[1]': [{name: t, port: in}]}}\n- {kind: test-echo, name: t}\n",
        "a",
        Value::Int(1),
    )
}

/// A `switch` whose second CEL condition matches.
pub fn switch() -> Fixture {
    Fixture::new(
        "- {kind: switch, name: a, matches: [{when: 'self == 0', port: 'out[0]'}, {when: 'self == 1', port: 'out[1]'}], ports: {'out[0]': [{name: t, port: in}], 'out[1]': [{name: t, port: in}]}}\n- {kind: test-echo, name: t}\n",
        "a",
        Value::Int(1),
    )
}

/// A `loop` over three elements into an echo.
pub fn r#loop() -> Fixture {
    Fixture::new(
        "- {kind: loop, name: a, ports: {'out[0]': [{name: t, port: in}]}}\n- {kind: test-echo, name: t}\n",
        "a",
        Value::from(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
    )
}

/// The payload the listener builds for `POST /orders?limit=10` with a few headers and a small
/// JSON body (`{name, score, tags}`), as every node after a listener sees it.
pub fn request_payload() -> Value {
    let (parts, ()) = http::Request::builder()
        .method("POST")
        .uri("/orders?limit=10")
        .header("host", "127.0.0.1:8000")
        .header("user-agent", "wrk/4.1.0")
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .header("content-length", "44")
        .body(())
        .expect("valid request")
        .into_parts();
    let body = Value::Map(
        [
            ("name", Value::from("ada")),
            ("score", Value::Int(42)),
            (
                "tags",
                Value::from(vec![Value::from("a"), Value::from("b")]),
            ),
        ]
        .into(),
    );
    uniflow_nodes_net::payload::request_payload(
        &parts.method,
        &parts.uri,
        parts.version,
        &parts.headers,
        body,
    )
}

/// JavaScript that answers its input as it came.
pub const JS_IDENTITY: &str = "export default function (a) { return a; }";
/// JavaScript that reads one field of the request's body.
pub const JS_FIELD: &str = "export default function (a) { return a.body.score; }";
/// JavaScript that builds a new response object from the request's body.
pub const JS_OBJECT: &str = "export default function (a) { return { status: 201, body: { id: a.body.name, score: a.body.score + 1 } }; }";

/// A snippet in `language` with `code`, run on [`request_payload`].
pub fn snippet_on_request(language: &str, code: &str) -> Fixture {
    snippet_on(language, code, request_payload())
}

/// An `if` with condition `when` on [`request_payload`], both branches into an echo.
pub fn if_on_request(when: &str) -> Fixture {
    Fixture::new(
        &format!(
            "- {{kind: if, name: a, when: '{when}', ports: {{'out[0]': [{{name: t, port: in}}], 'out[1]': [{{name: t, port: in}}]}}}}\n- {{kind: test-echo, name: t}}\n"
        ),
        "a",
        request_payload(),
    )
}

/// `examples/ping.yaml` compiled (its listener is not started) with a `GET /ping` request.
pub struct Ping {
    /// The listener's place in the graph.
    listener: uniflow_core::LoadCx,
    parts: http::request::Parts,
}

impl Ping {
    /// The ping workflow and the request `ab` sends.
    ///
    /// # Panics
    /// When the example is missing or invalid.
    pub fn new() -> Ping {
        let yaml = include_str!("../../examples/ping.yaml");
        let graph = graph(yaml);
        let listener = graph.find("listener").expect("ping.yaml has a listener");
        let (parts, ()) = http::Request::builder()
            .method("GET")
            .uri("/ping")
            .version(http::Version::HTTP_10)
            .header("host", "127.0.0.1:8000")
            .header("user-agent", "ApacheBench/2.3")
            .header("accept", "*/*")
            .body(())
            .expect("valid request")
            .into_parts();
        Ping {
            listener: uniflow_core::LoadCx::top(graph, listener),
            parts,
        }
    }

    /// The in-process ping path: request -> payload -> router -> snippet -> response bytes.
    ///
    /// # Panics
    /// When the path waits or the response is not `pong`.
    #[inline]
    pub fn run(&self) -> Bytes {
        let response =
            uniflow_nodes_net::listener::respond(&self.listener, &self.parts, Bytes::new())
                .now_or_never()
                .expect("the ping path does not wait");
        body_bytes(response)
    }
}

fn body_bytes(response: http::Response<uniflow_nodes_net::payload::Body>) -> Bytes {
    response
        .into_body()
        .collect()
        .now_or_never()
        .expect("a full body is ready")
        .expect("infallible")
        .to_bytes()
}

impl Default for Ping {
    fn default() -> Self {
        Ping::new()
    }
}

/// `n` chained text snippets as YAML, for the compile benchmark.
pub fn chain_yaml(n: usize) -> String {
    let mut yaml = String::new();
    for i in 0..n {
        if i + 1 < n {
            yaml.push_str(&format!(
                "- {{kind: snippet, name: s{i}, language: text, code: v{i}, ports: {{out: [{{name: s{}, port: in}}]}}}}\n",
                i + 1
            ));
        } else {
            yaml.push_str(&format!(
                "- {{kind: snippet, name: s{i}, language: text, code: v{i}}}\n"
            ));
        }
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_answer_what_they_should() {
        assert_eq!(hop().run(), Packet::Data(Value::from("ping")));
        assert_eq!(
            fan_out(2).run().into_value().as_list().map(|l| l.len()),
            Some(2)
        );
        assert_eq!(router(1000).run(), Packet::None);
        assert_eq!(
            snippet("json", "{\"a\": 1}").run().into_value().get("a"),
            Some(&Value::Int(1))
        );
        assert_eq!(Ping::new().run(), Bytes::from_static(b"pong"));
        let a = Value::Map([("a", 1)].into());
        assert_eq!(
            snippet_on("cel", "self.a + 1", a).run(),
            Packet::Data(Value::Int(2))
        );
        assert_eq!(
            snippet_on(
                "javascript",
                "export default function (x) { return x + 1; }",
                Value::Int(1)
            )
            .run(),
            Packet::Data(Value::Int(2))
        );
        assert_eq!(r#if().run(), Packet::Data(Value::Int(1)));
        assert_eq!(switch().run(), Packet::Data(Value::Int(1)));
        assert_eq!(
            r#loop().run().into_value().as_list().map(|l| l.len()),
            Some(3)
        );
        let request = request_payload();
        assert_eq!(
            snippet_on_request("cel", "self").run(),
            Packet::Data(request.clone())
        );
        assert_eq!(
            snippet_on_request("cel", "self.body.score").run(),
            Packet::Data(Value::Int(42))
        );
        assert_eq!(
            if_on_request("self.method == \"GET\"").run(),
            Packet::Data(request.clone())
        );
        assert_eq!(
            snippet_on_request("javascript", JS_IDENTITY).run(),
            Packet::Data(request)
        );
        assert_eq!(
            snippet_on_request("javascript", JS_FIELD).run(),
            Packet::Data(Value::Int(42))
        );
        assert_eq!(
            snippet_on_request("javascript", JS_OBJECT).run(),
            Packet::Data(Value::Map(
                [
                    (
                        "body",
                        Value::Map([("id", Value::from("ada")), ("score", Value::Int(43))].into())
                    ),
                    ("status", Value::Int(201)),
                ]
                .into(),
            ))
        );
        let g = graph(&chain_yaml(10));
        assert_eq!(g.symbols().len(), 10);
    }
}
