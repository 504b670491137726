//! The live namespace through the packet protocol: charts, secrets and env across reloads.

use std::sync::Arc;

use uniflow_core::testing::SourceNode;
use uniflow_core::{Graph, Registry};
use uniflow_spec::{Chart, Format, Secret, Spec, parse, parse_charts, parse_secrets};
use uniflow_value::Value;

use crate::{Live, Options, Snapshot};

fn live(options: Options) -> Live {
    let mut registry = Registry::new();
    uniflow_core::testing::register(&mut registry);
    Live::new("default", registry, options)
}

fn specs(yaml: &str) -> Vec<Spec> {
    parse(yaml, Format::Yaml, None).unwrap_or_else(|d| panic!("{d}"))
}

fn secrets(yaml: &str) -> Vec<Secret> {
    parse_secrets(yaml, Format::Yaml, None, "default").unwrap_or_else(|d| panic!("{d}"))
}

fn charts(yaml: &str) -> Vec<Chart> {
    parse_charts(yaml, Format::Yaml, None, "default").unwrap_or_else(|d| panic!("{d}"))
}

/// What the source named `s` gets back for a null packet.
async fn fire(graph: &Arc<Graph>) -> String {
    let id = graph.find("s").expect("a source named s");
    let source: &SourceNode = graph.node(id).downcast_ref().expect("a test-source");
    match source.fire(Value::Null).await.value() {
        Some(Value::String(s)) => s.to_string(),
        Some(Value::Error(e)) => format!("error: {}", e.message()),
        other => format!("{other:?}"),
    }
}

const SOURCE: &str =
    "- {id: s, kind: test-source, name: s, tag: rt, ports: {out: [{name: g, port: in}]}}\n";

const GREETER: &str = "- name: greeter\n  \
     specs: [{kind: test-const, name: inner, value: '{{ .WORD }}'}]\n  \
     ports: {in: [{name: inner, port: in}], out: [{name: inner, port: out}]}\n  \
     env: {WORD: [{value: '{{ .word }}'}]}\n";

#[tokio::test]
async fn a_chart_is_a_kind_templated_from_its_instance_and_a_change_rebuilds_it() {
    let live = live(Options::default());
    let report = live
        .apply(Snapshot {
            specs: specs(&format!(
                "{SOURCE}- {{id: g, kind: greeter, name: g, word: chart-hi}}\n"
            )),
            charts: charts(GREETER),
            ..Snapshot::default()
        })
        .await;
    assert!(report.problems.is_empty(), "{}", report.problems);
    assert_eq!(fire(&live.graph()).await, "chart-hi");
    // The chart changes, its instance does not: the instance is built again.
    let changed = GREETER.replace("'{{ .WORD }}'", "'{{ .WORD }}!'");
    let report = live
        .apply(Snapshot {
            specs: specs(&format!(
                "{SOURCE}- {{id: g, kind: greeter, name: g, word: chart-hi}}\n"
            )),
            charts: charts(&changed),
            ..Snapshot::default()
        })
        .await;
    assert_eq!(report.compiled, 1, "{report:?}");
    assert_eq!(fire(&live.graph()).await, "chart-hi!");
}

#[tokio::test]
async fn charts_nest_and_a_chart_that_includes_itself_is_refused_with_the_cycle() {
    let live = live(Options::default());
    let nested = format!(
        "{GREETER}- name: outer\n  \
           specs: [{{kind: greeter, name: g2, word: '{{{{ .W }}}}'}}]\n  \
           ports: {{in: [{{name: g2, port: in}}]}}\n  \
           env: {{W: [{{value: nested}}]}}\n\
         - name: loop-a\n  specs: [{{kind: loop-b, name: b}}]\n\
         - name: loop-b\n  specs: [{{kind: loop-a, name: a}}]\n"
    );
    let report = live
        .apply(Snapshot {
            specs: specs(&format!(
                "{SOURCE}- {{id: g, kind: outer, name: g}}\n- {{id: l, kind: loop-a, name: l}}\n"
            )),
            charts: charts(&nested),
            ..Snapshot::default()
        })
        .await;
    assert_eq!(fire(&live.graph()).await, "nested");
    let text = report.problems.to_string();
    assert!(
        text.contains("chart `loop-a` includes itself: loop-a -> loop-b -> loop-a"),
        "{text}"
    );
    assert!(live.graph().find("l").is_none());
}

#[tokio::test]
async fn a_changed_secret_rebinds_its_specs_and_a_deleted_one_keeps_the_running_version() {
    let live = live(Options::default());
    let flow = format!(
        "{SOURCE}- {{id: g, kind: test-const, name: g, value: '{{{{ .MSG }}}}', env: {{MSG: [{{name: greeting, value: '{{{{ .text }}}}'}}]}}}}\n"
    );
    let report = live
        .apply(Snapshot {
            specs: specs(&flow),
            secrets: secrets("- {name: greeting, data: {text: hello}}\n"),
            ..Snapshot::default()
        })
        .await;
    assert!(report.problems.is_empty(), "{}", report.problems);
    assert_eq!(fire(&live.graph()).await, "hello");
    live.apply(Snapshot {
        specs: specs(&flow),
        secrets: secrets("- {name: greeting, data: {text: bonjour}}\n"),
        ..Snapshot::default()
    })
    .await;
    assert_eq!(fire(&live.graph()).await, "bonjour");
    // Deleted: the spec no longer binds, and its running version keeps serving.
    let report = live
        .apply(Snapshot {
            specs: specs(&flow),
            ..Snapshot::default()
        })
        .await;
    assert!(
        report.problems.to_string().contains("env.MSG"),
        "{}",
        report.problems
    );
    assert!(
        !report.problems.to_string().contains("bonjour"),
        "secret data leaked: {}",
        report.problems
    );
    assert_eq!(fire(&live.graph()).await, "bonjour");
}

#[tokio::test]
async fn start_env_values_are_the_lowest_priority() {
    let live = live(Options {
        env: vec![
            ("WHO".to_owned(), Value::from("world")),
            ("MSG".to_owned(), Value::from("from -e")),
        ],
        ..Options::default()
    });
    live.apply(Snapshot {
        specs: specs(&format!(
            "{SOURCE}- {{id: g, kind: test-const, name: g, value: '{{{{ .MSG }}}} {{{{ .WHO }}}}', env: {{MSG: [{{value: hello}}]}}}}\n"
        )),
        ..Snapshot::default()
    })
    .await;
    assert_eq!(fire(&live.graph()).await, "hello world");
}

#[tokio::test]
async fn applying_the_same_snapshot_again_publishes_nothing() {
    let live = live(Options::default());
    let snapshot = Snapshot {
        specs: specs(&format!(
            "{SOURCE}- {{id: g, kind: test-const, name: g, value: one}}\n"
        )),
        ..Snapshot::default()
    };
    assert!(live.apply(snapshot.clone()).await.published);
    let before = live.graph();
    let again = live.apply(snapshot).await;
    assert!(!again.published, "{again:?}");
    assert!(Arc::ptr_eq(&before, &live.graph()));
}

#[tokio::test]
async fn a_problem_never_quotes_a_secret_value() {
    let live = live(Options::default());
    let report = live
        .apply(Snapshot {
            specs: specs(
                "- {id: d, kind: test-delay, name: d, millis: '{{ .WAIT }}', env: {WAIT: [{name: db, value: '{{ .password }}'}]}}\n",
            ),
            secrets: secrets("- {name: db, data: {password: hunter2}}\n"),
            ..Snapshot::default()
        })
        .await;
    let text = report.problems.to_string();
    assert!(text.contains("spec `d` field `millis`"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
