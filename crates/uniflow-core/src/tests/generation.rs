//! Generations: what a reload keeps, rebuilds, retires and reports, through the packet
//! protocol directly.

use std::collections::HashSet;
use std::sync::Arc;

use uniflow_spec::{Format, Spec, parse};
use uniflow_value::Value;

use super::registry;
use crate::testing::{SourceNode, events};
use crate::{Build, Generation, Graph, Packet, Retired};

fn specs(yaml: &str) -> Vec<Spec> {
    parse(yaml, Format::Yaml, None).unwrap_or_else(|d| panic!("{d}"))
}

/// Builds and starts the successor of `previous`; panics when it fails to start.
async fn next(previous: &Arc<Graph>, yaml: &str) -> (Arc<Graph>, Retired, Vec<String>) {
    next_with(previous, yaml, &HashSet::new(), &|_| false)
        .await
        .unwrap_or_else(|e| panic!("{}", e.error))
}

async fn next_with(
    previous: &Arc<Graph>,
    yaml: &str,
    held: &HashSet<String>,
    stale: &dyn Fn(&Spec) -> bool,
) -> Result<(Arc<Graph>, Retired, Vec<String>), crate::Failed> {
    let registry = registry();
    let generation = Generation::build(
        previous,
        specs(yaml),
        &Build {
            registry: &registry,
            secrets: &|_, _| None,
            stale,
            held,
            wrap: None,
            agent: None,
        },
    );
    let problems = generation
        .problems()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    let (graph, retired) = generation.start().await?;
    Ok((graph, retired, problems))
}

fn source<'g>(graph: &'g Graph, name: &str) -> &'g SourceNode {
    let id = graph.find(name).expect("the source exists");
    graph.node(id).downcast_ref().expect("a test-source")
}

fn node_of(graph: &Graph, name: &str) -> *const () {
    let id = graph.find(name).expect("the node exists");
    Arc::as_ptr(&graph.symbols()[id.0 as usize].node).cast()
}

fn text(packet: &Packet) -> String {
    match packet.value() {
        Some(Value::Error(e)) => format!("error: {}", e.message()),
        Some(Value::String(s)) => s.to_string(),
        Some(Value::Int(i)) => i.to_string(),
        Some(v) => format!("{v:?}"),
        None => "none".to_owned(),
    }
}

#[tokio::test]
async fn an_unchanged_spec_keeps_its_node_and_state_and_a_changed_one_is_rebuilt() {
    let v1 = "- {id: s, kind: test-source, name: s, tag: g1, ports: {out: [{name: c, port: in}]}}\n\
              - {id: c, kind: test-const, name: c, value: one}\n\
              - {id: n, kind: test-source, name: counter, tag: g1-counter}\n\
              - {id: gone, kind: test-source, name: gone, tag: g1-gone}\n";
    let (g1, retired, problems) = next(&Graph::empty(), v1).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert!(retired.is_empty());
    assert_eq!(text(&source(&g1, "s").fire(Value::Null).await), "one");
    // State: the counter has had two packets.
    let counter = g1.find("counter").unwrap();
    for _ in 0..2 {
        crate::tests::write(&g1, &crate::Process::new(), "counter", "in", Value::Null).await;
    }
    assert_eq!(events("g1-counter"), ["load:g1-counter"]);

    let v2 = "- {id: s, kind: test-source, name: s, tag: g1, ports: {out: [{name: c, port: in}]}}\n\
              - {id: c, kind: test-const, name: c, value: two}\n\
              - {id: n, kind: test-source, name: counter, tag: g1-counter}\n";
    let (g2, retired, problems) = next(&g1, v2).await;
    assert!(problems.is_empty(), "{problems:?}");
    // The source and the counter are the same nodes; the constant is new; the old constant
    // and `gone` are retired.
    assert_eq!(node_of(&g1, "s"), node_of(&g2, "s"));
    assert_eq!(node_of(&g1, "counter"), node_of(&g2, "counter"));
    assert_ne!(node_of(&g1, "c"), node_of(&g2, "c"));
    assert_eq!(retired.len(), 2);
    retired.unload().await;
    assert_eq!(events("g1-gone"), ["load:g1-gone", "unload:g1-gone"]);
    assert_eq!(
        events("g1-counter"),
        ["load:g1-counter", "moved:g1-counter"]
    );
    // The kept source writes on the new graph, and the counter kept its count.
    assert_eq!(text(&source(&g2, "s").fire(Value::Null).await), "two");
    let third =
        crate::tests::write(&g2, &crate::Process::new(), "counter", "in", Value::Null).await;
    assert_eq!(text(&third), "3");
    // The old graph is untouched: a request that started there finishes there.
    assert_eq!(g1.find("counter"), Some(counter));
    let old_c = crate::tests::write(&g1, &crate::Process::new(), "c", "in", Value::Null).await;
    assert_eq!(text(&old_c), "one");
}

#[tokio::test]
async fn a_changed_node_adopts_its_predecessor_and_init_runs_for_new_nodes_only() {
    let v1 = "- {id: s, kind: test-source, name: s, tag: g2-a}\n\
              - {id: k, kind: test-source, name: k, tag: g2-k, ports: {init: [{name: l, port: in}]}}\n\
              - {id: l, kind: test-log, name: l, tag: g2-init}\n";
    let (g1, _, _) = next(&Graph::empty(), v1).await;
    assert_eq!(crate::testing::logged("g2-init"), 1);
    let v2 = "- {id: s, kind: test-source, name: s, tag: g2-b}\n\
              - {id: k, kind: test-source, name: k, tag: g2-k, ports: {init: [{name: l, port: in}]}}\n\
              - {id: l, kind: test-log, name: l, tag: g2-init}\n";
    let (_g2, retired, _) = next(&g1, v2).await;
    assert_eq!(events("g2-b"), ["adopt(g2-a):g2-b", "load:g2-b"]);
    // `k` did not change: its init is not written again.
    assert_eq!(crate::testing::logged("g2-init"), 1);
    // The new version loaded before the old one is unloaded.
    assert_eq!(events("g2-a"), ["load:g2-a"]);
    retired.unload().await;
    assert_eq!(events("g2-a"), ["load:g2-a", "unload:g2-a"]);
}

#[tokio::test]
async fn a_spec_that_fails_keeps_its_running_node_and_a_new_one_stays_out() {
    let v1 = "- {id: s, kind: test-source, name: s, tag: g3, ports: {out: [{name: c, port: in}]}}\n\
              - {id: c, kind: test-const, name: c, value: one}\n";
    let (g1, _, _) = next(&Graph::empty(), v1).await;
    // `c` loses its required field; `x` is new and of an unknown kind.
    let v2 = "- {id: s, kind: test-source, name: s, tag: g3, ports: {out: [{name: c, port: in}, {name: x, port: in}]}}\n\
              - {id: c, kind: test-const, name: c}\n\
              - {id: x, kind: no-such-kind, name: x}\n";
    let (g2, _, problems) = next(&g1, v2).await;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("spec `c`"), "{problems:?}");
    assert!(
        problems[1].contains("unknown kind `no-such-kind`"),
        "{problems:?}"
    );
    assert_eq!(node_of(&g1, "c"), node_of(&g2, "c"));
    assert!(g2.find("x").is_none());
    // The fan-out reaches the kept `c` and the stand-in for `x`, whose error names it.
    let answer = text(&source(&g2, "s").fire(Value::Null).await);
    assert!(answer.contains("node `x` is not active"), "{answer}");
}

#[tokio::test]
async fn a_link_to_a_missing_node_answers_an_error_until_the_node_comes() {
    let v1 =
        "- {id: s, kind: test-source, name: s, tag: g4, ports: {out: [{name: later, port: in}]}}\n";
    let (g1, _, problems) = next(&Graph::empty(), v1).await;
    assert!(
        problems.is_empty(),
        "a link to a missing node is not a problem: {problems:?}"
    );
    assert_eq!(
        text(&source(&g1, "s").fire(Value::Null).await),
        "error: node `later` is not active"
    );
    let v2 = format!("{v1}- {{id: later, kind: test-const, name: later, value: healed}}\n");
    let (g2, _, _) = next(&g1, &v2).await;
    assert_eq!(text(&source(&g2, "s").fire(Value::Null).await), "healed");
    // And deleting it again breaks the link the same way.
    let (g3, _, _) = next(&g2, v1).await;
    assert_eq!(
        text(&source(&g3, "s").fire(Value::Null).await),
        "error: node `later` is not active"
    );
}

#[tokio::test]
async fn a_node_that_fails_to_load_leaves_the_running_generation_as_it_was() {
    let v1 = "- {id: s, kind: test-source, name: s, tag: g5-old, ports: {out: [{name: c, port: in}]}}\n\
              - {id: c, kind: test-const, name: c, value: one}\n";
    let (g1, _, _) = next(&Graph::empty(), v1).await;
    let v2 = "- {id: s, kind: test-source, name: s, tag: g5-new, fail: true, ports: {out: [{name: c, port: in}]}}\n\
              - {id: c, kind: test-const, name: c, value: two}\n\
              - {id: t, kind: test-source, name: t, tag: g5-other}\n";
    let failed = next_with(&g1, v2, &HashSet::new(), &|_| false)
        .await
        .err()
        .expect("the new `s` fails to load");
    assert_eq!(failed.key, "s");
    assert!(
        failed.error.to_string().contains("g5-new was told to fail"),
        "{}",
        failed.error
    );
    // Everything the attempt loaded is unloaded again; the old source was never touched.
    assert_eq!(
        events("g5-new"),
        ["adopt(g5-old):g5-new", "load:g5-new", "unload:g5-new"]
    );
    assert_eq!(events("g5-old"), ["load:g5-old"]);
    assert_eq!(text(&source(&g1, "s").fire(Value::Null).await), "one");
    // Built again with `s` held, the rest of the change goes through and `s` keeps running.
    let held = HashSet::from(["s".to_owned()]);
    let (g2, retired, _) = next_with(&g1, v2, &held, &|_| false).await.ok().unwrap();
    // Only the old constant.
    assert_eq!(retired.len(), 1);
    assert_eq!(node_of(&g1, "s"), node_of(&g2, "s"));
    assert_eq!(text(&source(&g2, "s").fire(Value::Null).await), "two");
    assert_eq!(events("g5-other"), ["load:g5-other"]);
}

#[tokio::test]
async fn a_stale_spec_is_rebuilt_though_it_did_not_change() {
    let v1 = "- {id: s, kind: test-source, name: s, tag: g6}\n";
    let (g1, _, _) = next(&Graph::empty(), v1).await;
    let (g2, retired, _) = next_with(&g1, v1, &HashSet::new(), &|s| {
        s.name.as_deref() == Some("s")
    })
    .await
    .ok()
    .unwrap();
    assert_ne!(node_of(&g1, "s"), node_of(&g2, "s"));
    assert_eq!(retired.len(), 1);
    let (g3, retired, _) = next(&g2, v1).await;
    assert_eq!(node_of(&g2, "s"), node_of(&g3, "s"));
    assert!(retired.is_empty());
}
