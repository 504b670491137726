//! The packet protocol's test cases as YAML, run by one runner that every crate's tests share.
//!
//! A file holds a list of cases. A case compiles `specs` (with the registry the caller
//! passes: its kinds and the [`testing`](crate::testing) kinds), loads the graph, and then
//! either writes one packet (`node`, `port` (default `in`), `value`, `proc`) or runs `steps`
//! in order. A write states exactly one of `answer: <value>`, `error: <message>`,
//! `error_contains: <text>` or `none: true`; any step may also state `recorded: [tags]` (what
//! `test-record` nodes appended in that process) and `logged: {tag: count}` (how often
//! `test-log` nodes with that tag ran, in any process). Steps besides writes are `join: N`
//! (wait until process N's children exit) and `exit: N` (with `with_error: <message>`, an
//! exit with that error), which waits for the work the exit leaves (a commit). Processes are numbered from 0 and
//! created on first use. A case with `diagnostics` instead expects the specs not to compile,
//! with each listed text somewhere in the problems.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use uniflow_spec::{Format, parse};
use uniflow_value::{List, Value};

use crate::testing::{logged, recorded};
use crate::{Cx, Graph, Packet, Process, Registry};

/// Runs every case of every `*.yaml` file in `dir`, in name order.
///
/// # Panics
/// On the first case that fails, naming its file and case; when `dir` holds no case file.
pub async fn check_dir(dir: &Path, registry: &Registry) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no case file", dir.display());
    for file in files {
        check_file(&file, registry).await;
    }
}

/// Runs every case in the file at `path`.
///
/// # Panics
/// On the first case that fails, naming the file and the case.
pub async fn check_file(path: &Path, registry: &Registry) {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases: Value = yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let cases = cases.as_list().expect("a file holds a list of cases");
    assert!(!cases.is_empty(), "{name} has no cases");
    for case in cases.iter() {
        check(&name, case, registry).await;
    }
}

fn text<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

fn index(v: &Value, key: &str) -> Option<usize> {
    v.get(key)
        .and_then(Value::as_i64)
        .map(|i| usize::try_from(i).expect("a process number"))
}

async fn check(file: &str, case: &Value, registry: &Registry) {
    let name = format!("{file}: {}", text(case, "name").unwrap_or("?"));
    let specs = yaml_serde::to_string(case.get("specs").expect("a case has specs")).unwrap();
    let specs = parse(&specs, Format::Yaml, None).unwrap_or_else(|d| panic!("{name}: {d}"));
    let compiled = Graph::compile(specs, registry, &|_, _| None);
    if let Some(want) = case.get("diagnostics").and_then(Value::as_list) {
        let got = match compiled {
            Ok(_) => panic!("{name}: the specs compiled"),
            Err(d) => d.to_string(),
        };
        for w in want.iter().filter_map(Value::as_str) {
            assert!(got.contains(w), "{name}: `{w}` missing in:\n{got}");
        }
        return;
    }
    let graph = compiled.unwrap_or_else(|d| panic!("{name}: {d}"));
    graph.load().await.unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut procs: Vec<Arc<Process>> = Vec::new();
    let steps = match case.get("steps").and_then(Value::as_list) {
        Some(steps) => steps.clone(),
        None => List::one(case.clone()),
    };
    for (i, step) in steps.iter().enumerate() {
        let label = format!("{name} step #{i}");
        let mut proc = |n: usize| {
            while procs.len() <= n {
                procs.push(Process::new());
            }
            Arc::clone(&procs[n])
        };
        if let Some(n) = index(step, "join") {
            let p = proc(n);
            tokio::time::timeout(Duration::from_secs(5), p.join())
                .await
                .unwrap_or_else(|_| panic!("{label}: children still running after 5s"));
        } else if let Some(n) = index(step, "exit") {
            let error = text(step, "with_error").map(uniflow_value::ErrorValue::new);
            tokio::time::timeout(Duration::from_secs(30), proc(n).exit(error).wait())
                .await
                .unwrap_or_else(|_| panic!("{label}: the exit's work still running after 30s"))
                .unwrap_or_else(|e| panic!("{label}: the exit's work failed: {e}"));
        } else if let Some(node) = text(step, "node") {
            let p = proc(index(step, "proc").unwrap_or(0));
            let id = graph
                .find(node)
                .unwrap_or_else(|| panic!("{label}: no node {node}"));
            let port = text(step, "port").unwrap_or("in");
            let n = graph.node(id);
            let port = n
                .in_port(port)
                .unwrap_or_else(|| panic!("{label}: no port {port}"));
            let value = step.get("value").cloned().unwrap_or_default();
            let answer = n
                .handle(Cx::new(&graph, &p, id), port, Packet::Data(value))
                .await;
            if let Some(want) = step.get("answer") {
                assert_eq!(answer, Packet::Data(want.clone()), "{label}");
            } else if let Some(want) = text(step, "error") {
                let got = answer.value().and_then(Value::as_error);
                assert_eq!(
                    got.map(|e| e.message().to_string()).as_deref(),
                    Some(want),
                    "{label}: {answer:?}"
                );
            } else if let Some(want) = text(step, "error_contains") {
                let got = answer.value().and_then(Value::as_error);
                assert!(
                    got.is_some_and(|e| e.message().contains(want)),
                    "{label}: wanted an error containing {want:?}, got {answer:?}"
                );
            } else if step.get("none").is_some() {
                assert!(answer.is_none(), "{label}: {answer:?}");
            } else {
                panic!("{label}: a write states no expected answer");
            }
            if let Some(want) = step.get("recorded").and_then(Value::as_list) {
                let want: Vec<&str> = want.iter().filter_map(Value::as_str).collect();
                assert_eq!(recorded(&p), want, "{label}: recorded");
            }
        } else {
            panic!("{label}: a step is a write (`node`), `join` or `exit`");
        }
        if let Some(want) = step.get("logged").and_then(Value::as_map) {
            for (tag, count) in want.iter() {
                let tag = tag.as_str().expect("a tag");
                let count = usize::try_from(count.as_i64().expect("a count")).unwrap();
                assert_eq!(logged(tag), count, "{label}: logged `{tag}`");
            }
        }
    }
    // What the case left running ends before the graph stops, as a listener's requests end
    // before it unloads.
    for p in procs {
        let _ = p.exit(None).wait().await;
    }
    graph.unload().await;
}
