//! `uniflow test`: suites that pass and fail, a filter that matches nothing, the JUnit report
//! read back by an XML parser, and the specs it refuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::{free_port, root};

fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uniflow-suites-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn uniflow_test(args: &[&str], files: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_uniflow"));
    cmd.current_dir(std::env::temp_dir())
        .env("RUST_LOG", "warn")
        .arg("test")
        .args(args);
    for file in files {
        cmd.arg("--from-specs").arg(file);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("uniflow runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `examples/ping.yaml` and `examples/ping_test.yaml`, moved to a free port.
fn ping_and_its_test() -> (PathBuf, PathBuf) {
    let port = free_port().to_string();
    let moved = |name: &str| {
        let text = std::fs::read_to_string(root().join("examples").join(name)).unwrap();
        assert!(text.contains("8000"), "{name} names port 8000");
        file(&format!("{port}-{name}"), &text.replace("8000", &port))
    };
    (moved("ping.yaml"), moved("ping_test.yaml"))
}

#[test]
fn the_ping_example_passes_its_test() {
    let (ping, test) = ping_and_its_test();
    let out = uniflow_test(&[], &[&ping, &test]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("PASS\t"))
        .unwrap_or_else(|| panic!("a PASS line in:\n{stdout}\n{stderr}"));
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields[..2], ["PASS", "default/ping_test"], "{line}");
    assert!(fields[2].ends_with('s'), "a duration: {line}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

const FAILING: &str = "\
- {kind: test, name: answer, ports: {'out[0]': [{name: forty_one, port: in}], 'out[1]': [{name: is_42, port: in}]}}
- {kind: snippet, name: forty_one, language: json, code: '41'}
- {kind: assert, name: is_42, expect: self == 42}
- {kind: test, name: targeted, ports: {'out[0]': [{name: first, port: in}], 'out[1]': [{name: first_sent_1, port: in}]}}
- {kind: snippet, name: first, language: json, code: '1', ports: {out: [{name: second, port: in}]}}
- {kind: snippet, name: second, language: json, code: '2'}
- {kind: assert, name: first_sent_1, expect: self == 1, target: {name: first, port: out}}
- {kind: test, name: thrown, ports: {out: [{name: boom, port: in}]}}
- {kind: throw, name: boom}
";

#[test]
fn a_failing_assertion_fails_the_run_with_its_message() {
    let specs = file("failing.yaml", FAILING);
    let out = uniflow_test(&[], &[&specs]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let failed = stdout
        .split_once("FAIL\tdefault/answer\t")
        .unwrap_or_else(|| panic!("a FAIL line in:\n{stdout}\n{stderr}"))
        .1;
    assert!(
        failed.contains("\n    assert failed: self == 42\n"),
        "{stdout}"
    );
    // A target checks the frame the process left at that port, not the answer (2).
    assert!(stdout.contains("PASS\tdefault/targeted\t"), "{stdout}");
    assert!(stdout.contains("FAIL\tdefault/thrown\t"), "{stdout}");
}

#[test]
fn a_filter_that_matches_nothing_runs_nothing_and_passes() {
    let specs = file("nothing.yaml", FAILING);
    let out = uniflow_test(&["^default/nothing-like-this$"], &[&specs]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains("PASS") && !stdout.contains("FAIL"),
        "{stdout}"
    );
    // And one that matches a single suite runs only it.
    let out = uniflow_test(&["targeted"], &[&specs]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

#[test]
fn the_junit_report_is_xml_a_parser_reads() {
    use quick_xml::events::Event;
    let specs = file("junit.yaml", FAILING);
    let report = std::env::temp_dir().join(format!("uniflow-junit-{}.xml", std::process::id()));
    let out = uniflow_test(&["--junit", report.to_str().unwrap()], &[&specs]);
    assert_eq!(out.status.code(), Some(1));
    let xml = std::fs::read_to_string(&report).unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut cases, mut failures, mut messages) = (Vec::new(), 0, Vec::new());
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).expect("well-formed XML") {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                let name = e
                    .try_get_attribute("name")
                    .unwrap()
                    .expect("a testcase has a name")
                    .unescape_value()
                    .unwrap()
                    .into_owned();
                cases.push(name);
            }
            Event::Start(e) if e.name().as_ref() == b"failure" => {
                failures += 1;
                messages.push(
                    e.try_get_attribute("message")
                        .unwrap()
                        .expect("a failure has a message")
                        .unescape_value()
                        .unwrap()
                        .into_owned(),
                );
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    cases.sort();
    assert_eq!(
        cases,
        ["default/answer", "default/targeted", "default/thrown"]
    );
    assert_eq!(failures, 2, "{xml}");
    assert!(
        messages.iter().any(|m| m == "assert failed: self == 42"),
        "{messages:?}"
    );
}

#[test]
fn a_test_with_nothing_linked_and_an_assert_with_bad_cel_are_refused_at_load() {
    let specs = file(
        "bad.yaml",
        "- {kind: test, name: lonely}\n- {kind: assert, name: broken, expect: 'self =='}\n",
    );
    let out = uniflow_test(&[], &[&specs]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "spec `lonely` field `ports.out`: a test runs the flow linked to `out`",
        "spec `broken` field `expect`:",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
}

/// The examples of `docs/nodes/test.md` and `docs/nodes/assert.md` pass as documented.
#[test]
fn the_test_and_assert_pages_examples_pass() {
    for page in ["test.md", "assert.md"] {
        let page_text = std::fs::read_to_string(root().join("docs/nodes").join(page)).unwrap();
        let yaml = page_text
            .split("```yaml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_else(|| panic!("{page}: a yaml example"));
        let port = free_port().to_string();
        let specs = file(&format!("page-{page}.yaml"), &yaml.replace("8000", &port));
        let out = uniflow_test(&[], &[&specs]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{page}:\n{stdout}\n{stderr}");
        assert!(stdout.contains("PASS\t"), "{page}:\n{stdout}");
    }
}
