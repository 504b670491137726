//! `router`: dispatches a request payload by method and path to `out[N]`.
//!
//! Routes compile into a radix tree once, at load (`tree.rs`). A match adds a `params` map
//! (`:name` captures one path segment, `*` the rest) and goes to the route's port. Otherwise an
//! HTTP payload goes to `error`, which, unlinked, becomes the response: 404 `Not Found` when no
//! path matches, 405 `Method Not Allowed` with `Allow` when the path matches for other methods,
//! and 204 with `Allow` for an `OPTIONS` request. Those payloads are built at load too.

/// Public so the fuzz target can compare it with a plain matcher (`fuzz/fuzz_targets/router.rs`).
pub mod tree;

use serde::Deserialize;
use uniflow_core::shape::indexed::{self, ERROR, out};
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, port};
use uniflow_spec::{Diagnostic, PortName};
use uniflow_value::{Map, Str, Value};

use tree::Tree;

/// The fields of a `router` spec.
#[derive(Debug, Deserialize)]
pub struct RouterSpec {
    /// The routes, tried by specificity (static > `:param` > `*`), not by order.
    pub routes: Vec<RouteSpec>,
}

/// One route. Every field is required; they default to empty only so that one run reports
/// every incomplete route, not just the first.
#[derive(Debug, Deserialize)]
pub struct RouteSpec {
    #[serde(default)]
    /// The HTTP method, matched exactly (`GET`).
    pub method: String,
    #[serde(default)]
    /// The path pattern (`/users/:id`, `/files/*`).
    pub path: String,
    #[serde(default)]
    /// The output port, `out[N]` (`out` means `out[0]`).
    pub port: String,
}

const IN: InPort = InPort(0);
/// The methods served at one path, with the answers for other methods precomputed.
#[derive(Default)]
struct Leaf {
    methods: Vec<(String, OutPort)>,
    not_allowed: Value,
    options: Value,
}

impl Leaf {
    fn port(&self, method: &str) -> Option<OutPort> {
        self.methods
            .iter()
            .find(|(m, _)| uniflow_value::eq_bytes(m.as_bytes(), method.as_bytes()))
            .map(|(_, p)| *p)
    }

    fn finish(&mut self) {
        let mut allow = String::from("OPTIONS");
        for (m, _) in &self.methods {
            if m != "OPTIONS" {
                allow.push_str(", ");
                allow.push_str(m);
            }
        }
        let header = Value::Map([("Allow", Value::from(vec![Value::from(allow)]))].into());
        self.not_allowed = Value::Map(
            [
                ("body", Value::from_static("Method Not Allowed")),
                ("header", header.clone()),
                ("status", Value::Int(405)),
            ]
            .into(),
        );
        self.options = Value::Map([("header", header), ("status", Value::Int(204))].into());
    }
}

/// The `params` of a match, out of line: most routes have none.
#[inline(never)]
fn params_map(params: &[(&str, &str)]) -> Map {
    params
        .iter()
        .map(|(name, value)| {
            (
                Value::String(Str::from(*name)),
                Value::String(Str::from(*value)),
            )
        })
        .collect()
}

/// The compiled `router`.
pub struct RouterNode {
    tree: Tree<Leaf>,
    not_found: Value,
}

impl NodeSpec for RouterSpec {
    const KIND: &'static str = "router";

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let mut tree: Tree<Leaf> = Tree::new();
        let mut problems = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let mut complete = true;
            for (field, value) in [
                ("method", &route.method),
                ("path", &route.path),
                ("port", &route.port),
            ] {
                if value.is_empty() {
                    problems
                        .push(cx.error(format!("routes[{i}].{field}"), "missing required field"));
                    complete = false;
                }
            }
            if !complete {
                continue;
            }
            let Some(index) = PortName::parse(&route.port).index_of(port::OUT, true) else {
                problems.push(cx.error(
                    format!("routes[{i}].port"),
                    format!("`{}` is not an output port `out[N]`", route.port),
                ));
                continue;
            };
            let leaf = match tree.entry(&route.path) {
                Ok(leaf) => leaf,
                Err(e) => {
                    problems.push(cx.error(format!("routes[{i}].path"), e.to_string()));
                    continue;
                }
            };
            if leaf.port(&route.method).is_some() {
                problems.push(cx.error(
                    format!("routes[{i}]"),
                    format!("duplicate route {} {}", route.method, route.path),
                ));
                continue;
            }
            leaf.methods.push((route.method.clone(), out(index)));
            leaf.finish();
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let not_found = Value::Map(
            [
                ("body", Value::from_static("Not Found")),
                ("status", Value::Int(404)),
            ]
            .into(),
        );
        Ok(Box::new(RouterNode { tree, not_found }))
    }
}

impl Node for RouterNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        (name == port::IN).then_some(IN)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        indexed::out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(Value::Map(request)) = packet else {
            return Flow::Ready(Packet::None);
        };
        let [method, path, params] = request.get_many(["method", "path", "params"]);
        let (Some(method), Some(path)) =
            (method.and_then(Value::as_str), path.and_then(Value::as_str))
        else {
            return Flow::Ready(Packet::None);
        };
        // A listener that feeds only routers sends its payloads with empty `params` already
        // in place; passed on unchanged, such a payload stays shareable.
        let has_empty_params = matches!(params, Some(Value::Map(p)) if p.is_empty());
        // The accepted leaf is the last one offered, so `port` ends up holding its port.
        let mut port = None;
        let Some(found) = self.tree.lookup(path, |leaf| {
            port = leaf.port(method);
            port.is_some()
        }) else {
            return cx.send(ERROR, self.not_found.clone());
        };
        if !found.accepted {
            let answer = if method == "OPTIONS" {
                &found.value.options
            } else {
                &found.value.not_allowed
            };
            return cx.send(ERROR, answer.clone());
        }
        let port = port.expect("accepted leaves serve the method");
        // Upstream answers None for a route to an `out[N]` that nothing created by linking.
        if !cx.port_exists(port) {
            return Flow::Ready(Packet::None);
        }
        if found.params.is_empty() {
            if has_empty_params {
                return cx.send(port, Value::Map(request));
            }
            // An empty map costs nothing to build.
            return cx.send(
                port,
                Value::Map(request.with("params", Value::Map(Map::new()))),
            );
        }
        let params = params_map(&found.params);
        cx.send(port, Value::Map(request.with("params", Value::Map(params))))
    }

    /// A request that no route takes is answered 404, 405 or 204 from the routes alone.
    fn relays_answers(&self) -> bool {
        true
    }

    fn reads_body(&self, _port: InPort, method: &str, path: &str) -> bool {
        self.tree
            .lookup(path, |leaf| leaf.port(method).is_some())
            .is_some_and(|found| found.accepted)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uniflow_core::{Graph, Process, Registry};
    use uniflow_spec::{Format, parse};

    use super::*;

    fn graph(yaml: &str) -> Result<Arc<Graph>, String> {
        let mut r = Registry::new();
        crate::register(&mut r);
        uniflow_core::testing::register(&mut r);
        let specs = parse(yaml, Format::Yaml, None).map_err(|d| d.to_string())?;
        Graph::compile(specs, &r, &|_, _| None).map_err(|d| d.to_string())
    }

    async fn route(graph: &Arc<Graph>, method: &str, path: &str) -> Packet {
        send(graph, request(method, path)).await
    }

    fn request(method: &str, path: &str) -> Map {
        [
            ("method", Value::from(method.to_owned())),
            ("path", Value::from(path.to_owned())),
        ]
        .into()
    }

    async fn send(graph: &Arc<Graph>, request: Map) -> Packet {
        let proc = Process::new();
        let id = graph.find("router").unwrap();
        graph
            .node(id)
            .handle(
                Cx::new(graph, &proc, id),
                IN,
                Packet::Data(Value::Map(request)),
            )
            .await
    }

    const ROUTES: &str = "
- kind: router
  name: router
  routes:
    - {method: GET, path: /users/:id, port: 'out[0]'}
    - {method: POST, path: /users/:id, port: 'out[0]'}
    - {method: GET, path: /files/*, port: 'out[1]'}
  ports: {'out[0]': [{name: user, port: in}], 'out[1]': [{name: file, port: in}]}
- {kind: test-echo, name: user}
- {kind: test-echo, name: file}
";

    #[tokio::test]
    async fn params_and_wildcard_reach_their_ports() {
        let g = graph(ROUTES).unwrap();
        let answer = route(&g, "GET", "/users/42").await.into_value();
        assert_eq!(answer.pick(&["params", "id"]), Some(&Value::from("42")));
        let answer = route(&g, "GET", "/files/a/b.txt").await.into_value();
        assert_eq!(answer.pick(&["params", "*"]), Some(&Value::from("a/b.txt")));
        let answer = route(&g, "GET", "/files/").await.into_value();
        assert_eq!(answer.pick(&["params", "*"]), Some(&Value::from("")));
    }

    #[tokio::test]
    async fn a_request_gets_params_once_and_one_that_has_them_empty_goes_on_as_it_is() {
        let routes = ROUTES.replace(
            "    - {method: GET, path: /files/*",
            "    - {method: GET, path: /users, port: 'out[0]'}\n    - {method: GET, path: /files/*",
        );
        let g = graph(&routes).unwrap();
        let empty = Value::Map(Map::new());
        let answer = route(&g, "GET", "/users").await.into_value();
        assert_eq!(answer.get("params"), Some(&empty));
        // What a listener that feeds only routers sends: params already in place, and the
        // payload shared with the connection's cache.
        let routed = request("GET", "/users").with("params", empty.clone());
        let Value::Map(answer) = send(&g, routed.clone()).await.into_value() else {
            panic!("not a map")
        };
        assert_eq!(answer, routed);
        assert_eq!(
            answer.entries().as_ptr(),
            routed.entries().as_ptr(),
            "passed on, not copied"
        );
        let answer = send(&g, request("GET", "/users/7").with("params", empty))
            .await
            .into_value();
        assert_eq!(
            answer.get("params"),
            Some(&Value::Map([("id", Value::from("7"))].into()))
        );
    }

    #[tokio::test]
    async fn misses_answer_404_405_and_options() {
        let g = graph(ROUTES).unwrap();
        let answer = route(&g, "GET", "/users/42/x").await.into_value();
        assert_eq!(answer.get("status"), Some(&Value::Int(404)));
        let answer = route(&g, "DELETE", "/users/42").await.into_value();
        assert_eq!(answer.get("status"), Some(&Value::Int(405)));
        assert_eq!(
            answer.pick(&["header", "Allow"]),
            Some(&Value::from(vec![Value::from("OPTIONS, GET, POST")]))
        );
        let answer = route(&g, "OPTIONS", "/users/42").await.into_value();
        assert_eq!(answer.get("status"), Some(&Value::Int(204)));
        assert_eq!(answer.get("body"), None);
    }

    #[tokio::test]
    async fn non_request_input_answers_none() {
        let g = graph(ROUTES).unwrap();
        let proc = Process::new();
        let id = g.find("router").unwrap();
        let answer = g
            .node(id)
            .handle(Cx::new(&g, &proc, id), IN, Packet::Data(Value::from("x")))
            .await;
        assert_eq!(answer, Packet::None);
    }

    #[test]
    fn bad_routes_are_all_reported() {
        let err = graph(
            "- kind: router\n  routes:\n    - {method: GET, path: /a, port: 'in[0]'}\n    - {method: GET, path: '/b/:', port: 'out[0]'}\n    - {method: GET, path: /c, port: out}\n    - {method: GET, path: /c, port: 'out[1]'}\n    - {path: /d, port: out}\n",
        )
        .unwrap_err();
        for want in [
            "field `routes[0].port`: `in[0]` is not an output port",
            "field `routes[1].path`: invalid route pattern",
            "field `routes[3]`: duplicate route GET /c",
        ] {
            assert!(err.contains(want), "missing `{want}` in {err}");
        }
        assert!(
            err.contains("field `routes[4].method`: missing required field"),
            "{err}"
        );
    }
}
