//! The `uniflow` binary, run as a user runs it.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, request, root, send};

fn uniflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_uniflow"));
    cmd.current_dir(std::env::temp_dir())
        .env("RUST_LOG", "info");
    cmd
}

fn spec_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("uniflow-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

fn run_to_end(cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("uniflow runs")
}

#[test]
fn bad_specs_name_file_spec_and_field_all_at_once() {
    let path = spec_file(
        "bad.yaml",
        "- {kind: listener, name: web, protocol: http, port: 1, ports: {out: [{name: ghost, port: in}]}}\n\
         - {kind: wat, name: odd}\n\
         - {kind: snippet, name: s, language: text}\n",
    );
    let out = run_to_end(uniflow().arg("start").arg("--from-specs").arg(&path));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let file = path.display().to_string();
    for want in [
        format!("{file}: spec `web` field `ports.out[0]`: links to `ghost.in`"),
        format!("{file}: spec `odd` field `kind`: unknown kind `wat`"),
        format!("{file}: spec `s` field `code`: missing required field"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn yaml_syntax_errors_name_the_line() {
    let path = spec_file("syntax.yaml", "- kind: listener\n  name: [web\n");
    let out = run_to_end(uniflow().arg("start").arg("--from-specs").arg(&path));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}: invalid syntax", path.display())) && stderr.contains("line"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = run_to_end(uniflow().args(["start", "--from-specs", "/nonexistent/flow.yaml"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("/nonexistent/flow.yaml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn an_unsupported_database_is_refused() {
    let path = root().join("examples/ping.yaml");
    let out = run_to_end(
        uniflow()
            .env("UNIFLOW_DATABASE_URL", "mongodb://x")
            .arg("start")
            .arg("--from-specs")
            .arg(path),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("database.url `mongodb://x` is not supported yet"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_exits_non_zero() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = spec_file(
        "taken.yaml",
        &format!(
            "- {{kind: listener, name: web, protocol: http, host: 127.0.0.1, port: {port}}}\n"
        ),
    );
    let out = run_to_end(uniflow().arg("start").arg("--from-specs").arg(&path));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn start_serves_ping_and_sigterm_exits_zero() {
    let port = free_port();
    let ping = std::fs::read_to_string(root().join("examples/ping.yaml")).unwrap();
    let path = spec_file(
        "ping.yaml",
        &ping.replace("port: 8000", &format!("port: {port}")),
    );
    let child = uniflow()
        .arg("start")
        .arg("--from-specs")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "uniflow did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = send(addr, &request("GET", "/ping", &[], b"")).await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, b"pong".as_slice())
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}:\n{stderr}", out.status);
    assert!(
        stderr.contains("listening") && stderr.contains(&format!(":{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[tokio::test]
async fn helloworld_prints_once_after_load_and_keeps_running() {
    let mut child = uniflow()
        .arg("start")
        .arg("--from-specs")
        .arg(root().join("examples/helloworld.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Reference scenario A16: the init port fires once both nodes have loaded.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "uniflow keeps running after init"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, World!");
}
