//! Protocol tests: YAML cases in `tests/protocol.yaml` run by the shared runner (`cases`),
//! plus the cases that need more than one write.

use std::future::IntoFuture;
use std::sync::Arc;

use futures_util::FutureExt;
use uniflow_spec::{Format, parse};
use uniflow_value::{Map, Value};

use crate::testing::{self, recorded};
use crate::{Cx, Graph, Packet, Process, ProcessSlot, Registry};

mod agent;
mod generation;

fn registry() -> Registry {
    let mut r = Registry::new();
    testing::register(&mut r);
    r
}

fn compile(specs: &Value) -> Arc<Graph> {
    let text = yaml_serde::to_string(specs).expect("specs serialize");
    let specs = parse(&text, Format::Yaml, None).expect("specs parse");
    Graph::compile(specs, &registry(), &|_, _| None).unwrap_or_else(|d| panic!("{d}"))
}

pub(crate) async fn write(
    graph: &Arc<Graph>,
    proc: &Arc<Process>,
    node: &str,
    port: &str,
    value: Value,
) -> Packet {
    let id = graph.find(node).expect("entry node exists");
    let node = graph.node(id);
    let port = node.in_port(port).expect("entry port exists");
    node.handle(Cx::new(graph, proc, id), port, Packet::Data(value))
        .await
}

/// The protocol's YAML cases (`tests/protocol.yaml`), through the shared runner.
#[tokio::test]
async fn protocol_cases() {
    // The directory cargo names when it runs the test, not the one baked in at build time: a
    // build cache shared by two checkouts may hold a test binary built in the other one.
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let path = std::path::Path::new(&dir).join("src/tests/protocol.yaml");
    crate::cases::check_file(&path, &registry()).await;
}

#[tokio::test]
async fn answers_come_back_in_write_order_per_process() {
    let graph = compile(
        &yaml_serde::from_str(
            "- {kind: test-record, name: a, tag: a, ports: {out: [{name: d, port: in}]}}\n\
         - {kind: test-delay, name: d, millis: 1}\n",
        )
        .unwrap(),
    );
    let proc = Process::new();
    let mut answers = Vec::new();
    for i in 0..5 {
        answers.push(write(&graph, &proc, "a", "in", Value::Int(i)).await);
    }
    let want: Vec<Packet> = (0..5).map(|i| Packet::Data(Value::Int(i))).collect();
    assert_eq!(answers, want);
    assert_eq!(recorded(&proc), ["a"; 5]);
}

#[tokio::test]
async fn concurrent_processes_do_not_see_each_others_state() {
    let graph = compile(
        &yaml_serde::from_str(
            "- {kind: test-record, name: a, tag: a, ports: {out: [{name: d, port: in}]}}\n\
         - {kind: test-delay, name: d, millis: 5, ports: {out: [{name: b, port: in}]}}\n\
         - {kind: test-record, name: b, tag: b}\n",
        )
        .unwrap(),
    );
    let procs: Vec<_> = (0..8).map(|_| Process::new()).collect();
    let answers = futures_util::future::join_all(
        procs
            .iter()
            .enumerate()
            .map(|(i, p)| write(&graph, p, "a", "in", Value::from(i))),
    )
    .await;
    for (i, (answer, proc)) in answers.iter().zip(&procs).enumerate() {
        assert_eq!(answer, &Packet::Data(Value::from(i)));
        assert_eq!(recorded(proc), ["a", "b"]);
    }
}

#[tokio::test]
async fn init_port_runs_once_after_load() {
    let graph = compile(
        &yaml_serde::from_str(
            "- {kind: test-echo, name: init, ports: {init: [{name: hello, port: in}]}}\n\
         - {kind: test-log, name: hello, tag: init_port_runs_once_after_load}\n",
        )
        .unwrap(),
    );
    assert_eq!(testing::logged("init_port_runs_once_after_load"), 0);
    graph.load().await.unwrap();
    assert_eq!(testing::logged("init_port_runs_once_after_load"), 1);
    graph.unload().await;
}

#[tokio::test]
async fn a_lazy_process_is_made_only_when_a_node_asks_for_it() {
    let graph = compile(
        &yaml_serde::from_str(
            "- {kind: test-echo, name: echo, ports: {out: [{name: wrap, port: in}]}}\n\
             - {kind: test-wrap, name: wrap, key: k}\n\
             - {kind: test-record, name: record, tag: seen, ports: {out: [{name: echo, port: in}]}}\n",
        )
        .unwrap(),
    );
    let run = |node: &str| {
        let id = graph.find(node).expect("node exists");
        let slot = ProcessSlot::new();
        let answer = graph
            .node(id)
            .handle(
                Cx::lazy(&graph, &slot, id),
                crate::shape::IN,
                Packet::Data(Value::Int(1)),
            )
            .into_future()
            .now_or_never()
            .expect("the flow is ready");
        (answer, slot)
    };
    let (answer, slot) = run("echo");
    assert_eq!(answer, Packet::Data(Value::Map(Map::from([("k", 1)]))));
    assert!(
        slot.made().is_none(),
        "echo and wrap never ask for the process"
    );
    let (answer, slot) = run("record");
    assert_eq!(answer, Packet::Data(Value::Map(Map::from([("k", 1)]))));
    let proc = slot.made().expect("test-record asked for the process");
    assert_eq!(recorded(proc), ["seen"]);
    assert!(Arc::ptr_eq(proc, slot.get()), "one process per slot");
}

#[test]
fn compile_reports_every_problem_at_once() {
    let specs = parse(
        "- {kind: test-echo, name: a, ports: {out: [{name: b, port: nope}], sideways: [{name: b, port: in}]}}\n\
         - {kind: test-echo, name: b, ports: {out: [{name: ghost, port: in}]}}\n\
         - {kind: wat, name: c}\n\
         - {kind: test-const, name: d}\n\
         - {kind: test-echo, name: b}\n",
        Format::Yaml,
        Some("flow.yaml"),
    )
    .unwrap();
    let err = Graph::compile(specs, &registry(), &|_, _| None).unwrap_err();
    let text = err.to_string();
    for want in [
        "spec `b` field `name`: duplicate name `b`",
        "spec `b` field `ports.out[0]`: links to `ghost.in`, but no node `ghost` exists",
        "spec `c` field `kind`: unknown kind `wat` (known kinds: test-const,",
        "spec `d` field `value`: missing required field",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    // Port checks run once every spec compiles.
    let specs = parse(
        "- {kind: test-echo, name: a, ports: {out: [{name: b, port: nope}], sideways: [{name: b, port: in}]}}\n\
         - {kind: test-echo, name: b}\n",
        Format::Yaml,
        None,
    )
    .unwrap();
    let text = Graph::compile(specs, &registry(), &|_, _| None)
        .unwrap_err()
        .to_string();
    assert!(text.contains("spec `a` field `ports.out[0].port`: node `b` (kind `test-echo`) has no input port `nope`"), "{text}");
    assert!(
        text.contains(
            "spec `a` field `ports.sideways`: kind `test-echo` has no output port `sideways`"
        ),
        "{text}"
    );
}
