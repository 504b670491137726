//! Process and listener lifecycle over real sockets: a client that disconnects, a graceful
//! stop with a request in flight, and a port already in use.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use uniflow_core::{Graph, testing::logged};
use uniflow_spec::{Format, parse};

use crate::support::{free_port, registry, request, send, start};

/// Fails unless `port` on 127.0.0.1 can be bound: the listener that held it was stopped.
fn assert_released(port: u16) {
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port {port} is still held after the load failed"
    );
}

fn slow_flow(tag: &str) -> Vec<uniflow_spec::Spec> {
    parse(
        &format!(
            "- {{kind: listener, name: listener, protocol: http, port: 8000, ports: {{out: [{{name: router, port: in}}]}}}}\n\
             - {{kind: router, name: router, routes: [{{method: GET, path: /slow, port: out}}], ports: {{out: [{{name: wait, port: in}}]}}}}\n\
             - {{kind: test-delay, name: wait, millis: 300, ports: {{out: [{{name: after, port: in}}]}}}}\n\
             - {{kind: test-log, name: after, tag: {tag}}}\n"
        ),
        Format::Yaml,
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn a_client_that_disconnects_ends_its_request() {
    let tag = "a_client_that_disconnects_ends_its_request";
    let (graph, addr) = start(slow_flow(tag)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&request("GET", "/slow", &[], b""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        logged(tag),
        0,
        "the work after the delay must not run for a gone client"
    );
    // The same flow does run to the end for a client that waits.
    let reply = send(addr, &request("GET", "/slow", &[], b"")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(logged(tag), 1);
    graph.unload().await;
}

#[tokio::test]
async fn unload_finishes_in_flight_requests_and_stops_accepting() {
    let tag = "unload_finishes_in_flight_requests_and_stops_accepting";
    let (graph, addr) = start(slow_flow(tag)).await;
    let in_flight = tokio::spawn(send(addr, request("GET", "/slow", &[], b"").leak()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    graph.unload().await;
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request completes");
    assert_eq!(logged(tag), 1);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_port_in_use_fails_the_load_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let specs = parse(
        &format!(
            "- {{kind: listener, name: web, protocol: http, host: 127.0.0.1, port: {port}}}\n"
        ),
        Format::Yaml,
        None,
    )
    .unwrap();
    let graph = Graph::compile(specs, &uniflow::registry(), &|_, _| None).unwrap();
    let err = graph.load().await.unwrap_err().to_string();
    assert!(
        err.contains("spec `web` failed to load: cannot listen on 127.0.0.1:"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("in use"), "{err}");
}

#[tokio::test]
async fn a_failed_load_stops_what_it_started_even_inside_a_block() {
    // A port that is free (for the block's first listener) and one that is taken (for its
    // second, which fails the load).
    let port = free_port();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let specs = parse(
        &format!(
            "- {{kind: listener, name: outer, protocol: http, host: 127.0.0.1, port: 0}}\n\
             - kind: block\n  name: b\n  specs:\n\
             \x20   - {{kind: listener, name: first, protocol: http, host: 127.0.0.1, port: {port}}}\n\
             \x20   - {{kind: listener, name: second, protocol: http, host: 127.0.0.1, port: {taken_port}}}\n"
        ),
        Format::Yaml,
        None,
    )
    .unwrap();
    let graph = Graph::compile(specs, &uniflow::registry(), &|_, _| None).unwrap();
    let err = graph.load().await.unwrap_err().to_string();
    assert!(err.contains("spec `b` failed to load"), "{err}");
    // The block's first listener was bound before its second failed; it must be closed.
    assert_released(port);
    drop(taken);
}

/// A listener inside a block whose `out` is linked: its requests leave the block through that
/// link, and the answer from outside comes back as the response; blocks nest.
#[tokio::test]
async fn a_listener_inside_blocks_answers_through_their_linked_outputs() {
    let port = free_port();
    let specs = parse(
        &format!(
            "- kind: block\n  name: outer\n  specs:\n\
             \x20   - kind: block\n\
             \x20     specs:\n\
             \x20       - {{kind: listener, protocol: http, host: 127.0.0.1, port: {port}}}\n\
             \x20       - {{kind: snippet, language: cel, code: '\"inner\"'}}\n\
             \x20 ports: {{out: [{{name: after, port: in}}]}}\n\
             - {{kind: snippet, name: after, language: cel, code: 'self + \"-outer\"'}}\n"
        ),
        Format::Yaml,
        None,
    )
    .unwrap();
    let graph = Graph::compile(specs, &uniflow::registry(), &|_, _| None).unwrap();
    graph.load().await.unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let reply = send(addr, &request("GET", "/", &[], b"")).await;
    graph.unload().await;
    assert_eq!(reply.status, 200);
    assert_eq!(String::from_utf8_lossy(&reply.body), "inner-outer");
}

#[tokio::test]
async fn a_forked_child_outlives_the_response_and_finishes() {
    let tag = "a_forked_child_outlives_the_response_and_finishes";
    let specs = parse(
        &format!(
            "- {{kind: listener, name: listener, protocol: http, port: 8000, ports: {{out: [{{name: router, port: in}}]}}}}\n\
             - {{kind: router, name: router, routes: [{{method: GET, path: /fork, port: out}}], ports: {{out: [{{name: bg, port: in}}]}}}}\n\
             - {{kind: fork, name: bg, ports: {{out: [{{name: wait, port: in}}]}}}}\n\
             - {{kind: test-delay, name: wait, millis: 1000, ports: {{out: [{{name: after, port: in}}]}}}}\n\
             - {{kind: test-log, name: after, tag: {tag}}}\n"
        ),
        Format::Yaml,
        None,
    )
    .unwrap();
    let (graph, addr) = start(specs).await;
    let started = std::time::Instant::now();
    let reply = send(addr, &request("GET", "/fork", &[], b"")).await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, b"".as_slice()));
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "the response does not wait for the child"
    );
    assert_eq!(logged(tag), 0);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        logged(tag),
        1,
        "the child ran to the end after the response"
    );
    graph.unload().await;
}

#[tokio::test]
async fn the_init_port_carries_its_nodes_spec() {
    let tag = "the_init_port_carries_its_nodes_spec";
    let specs = parse(
        &format!(
            "- {{kind: nop, name: boot, annotations: {{purpose: demo}}, ports: {{init: [{{name: check, port: in}}]}}}}\n\
             - kind: if\n  name: check\n\
             \x20 when: 'self.kind == \"nop\" && self.name == \"boot\" && self.annotations.purpose == \"demo\" && self.ports.init[0].name == \"check\"'\n\
             \x20 ports: {{'out[0]': [{{name: good, port: in}}], 'out[1]': [{{name: bad, port: in}}]}}\n\
             - {{kind: test-log, name: good, tag: {tag}}}\n\
             - {{kind: test-log, name: bad, tag: {tag}_bad}}\n"
        ),
        Format::Yaml,
        None,
    )
    .unwrap();
    let graph = Graph::compile(specs, &registry(), &|_, _| None).unwrap();
    graph.load().await.unwrap();
    assert_eq!(logged(tag), 1, "the init flow saw the spec of `boot`");
    assert_eq!(logged(&format!("{tag}_bad")), 0);
    graph.unload().await;
}

#[tokio::test]
async fn an_init_port_that_answers_an_error_fails_the_load() {
    let port = free_port();
    let specs = parse(
        &format!(
            "- {{kind: listener, name: web, protocol: http, host: 127.0.0.1, port: {port}}}\n\
             - {{kind: nop, name: boot, ports: {{init: [{{name: migrate, port: in}}]}}}}\n\
             - {{kind: test-fail, name: migrate, message: no database}}\n"
        ),
        Format::Yaml,
        None,
    )
    .unwrap();
    let graph = Graph::compile(specs, &registry(), &|_, _| None).unwrap();
    let err = graph.load().await.unwrap_err().to_string();
    assert_eq!(
        err,
        "spec `boot` failed to load: its init port answered an error: no database"
    );
    // The listener had started before the init ports were written; it is stopped again.
    assert_released(port);
}
