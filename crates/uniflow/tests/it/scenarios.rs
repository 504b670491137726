//! Reference scenarios and bad-input cases as YAML files in `tests/cases`, run by `check`.
//!
//! A case holds `specs` (or `specs_file`, relative to the workspace root) and `requests`; each
//! request is `request: METHOD PATH` with optional `headers` and `body`, or `raw` bytes, and an
//! `expect` block: `status`, `headers` (exact values), `absent` (header names), `body` (exact)
//! or `body_contains`.

use uniflow_spec::{Format, load_file, parse};
use uniflow_value::Value;

use crate::support::{request, root, send, start};

async fn check(file: &str) {
    let path = root().join("crates/uniflow/tests/cases").join(file);
    let case: Value = yaml_serde::from_str(&std::fs::read_to_string(&path).expect("case file"))
        .expect("case parses");
    let specs = match (
        case.get("specs"),
        case.get("specs_file").and_then(Value::as_str),
    ) {
        (Some(specs), _) => parse(
            &yaml_serde::to_string(specs).unwrap(),
            Format::Yaml,
            Some(file),
        )
        .unwrap(),
        (None, Some(f)) => load_file(&root().join(f), "default").unwrap(),
        _ => panic!("{file}: no specs"),
    };
    let (graph, addr) = start(specs).await;
    let requests = case
        .get("requests")
        .and_then(Value::as_list)
        .expect("requests");
    assert!(!requests.is_empty());
    for (i, r) in requests.iter().enumerate() {
        let text = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
        let label = format!(
            "{file} request #{i} {}",
            text("name").or_else(|| text("request")).unwrap_or_default()
        );
        let raw = match (text("raw"), text("request")) {
            (Some(raw), _) => raw.into_bytes(),
            (None, Some(line)) => {
                let (method, target) = line.split_once(' ').expect("`METHOD PATH`");
                let headers: Vec<(String, String)> = r
                    .get("headers")
                    .and_then(Value::as_map)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().unwrap().to_owned(),
                                    v.as_str().unwrap().to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                request(
                    method,
                    target,
                    &headers,
                    text("body").unwrap_or_default().as_bytes(),
                )
            }
            _ => panic!("{label}: no request"),
        };
        let reply = send(addr, &raw).await;
        let expect = r.get("expect").expect("expect");
        let body = String::from_utf8_lossy(&reply.body);
        if let Some(status) = expect.get("status").and_then(Value::as_i64) {
            assert_eq!(
                i64::from(reply.status),
                status,
                "{label}: status; body {body:?}"
            );
        }
        if let Some(headers) = expect.get("headers").and_then(Value::as_map) {
            for (k, v) in headers.iter() {
                let (k, v) = (k.as_str().unwrap(), v.as_str().unwrap());
                assert_eq!(
                    reply.header(k),
                    Some(v),
                    "{label}: header {k}; all {:?}",
                    reply.headers
                );
            }
        }
        if let Some(absent) = expect.get("absent").and_then(Value::as_list) {
            for k in absent.iter().filter_map(Value::as_str) {
                assert_eq!(
                    reply.header(k),
                    None,
                    "{label}: header {k} should be absent"
                );
            }
        }
        if let Some(want) = expect.get("body").and_then(Value::as_str) {
            assert_eq!(body, want, "{label}: body");
        }
        if let Some(want) = expect.get("body_contains").and_then(Value::as_str) {
            assert!(body.contains(want), "{label}: body {body:?} lacks {want:?}");
        }
    }
    graph.unload().await;
}

#[tokio::test]
async fn a1_ping() {
    check("a1_ping.yaml").await;
}

#[tokio::test]
async fn a2_router_errors() {
    check("a2_router_errors.yaml").await;
}

#[tokio::test]
async fn a3_params() {
    check("a3_params.yaml").await;
}

#[tokio::test]
async fn a8_constants() {
    check("a8_constants.yaml").await;
}

#[tokio::test]
async fn answers() {
    check("answers.yaml").await;
}

#[tokio::test]
async fn bad_input() {
    check("bad_input.yaml").await;
}

#[test]
fn every_case_file_has_a_test() {
    let source = include_str!("scenarios.rs");
    for entry in std::fs::read_dir(root().join("crates/uniflow/tests/cases")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            source.contains(&format!("check(\"{name}\")")),
            "{name} is not run by any test"
        );
    }
}
