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
        stderr.contains("unsupported store URL `mongodb://x`")
            && stderr.contains("`sqlite://PATH` or `postgres://...`"),
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

/// Runs `cmd` to its end, or kills it after `limit` (then `None`): a start that should fail
/// but serves instead must fail the test, not hang it.
fn run_for_at_most(cmd: &mut Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("uniflow runs");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child.wait_with_output().unwrap())
}

fn terminate(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Polls until something accepts on `addr`.
async fn wait_for_listener(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "uniflow did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_name_used_twice_is_refused_naming_both_specs() {
    let path = spec_file(
        "twice.yaml",
        "- {kind: snippet, name: s, language: text, code: one}\n\
         - {kind: snippet, name: t, language: text, code: two}\n\
         - {kind: snippet, name: s, language: text, code: three}\n\
         - {kind: wat, name: odd}\n",
    );
    let out = run_for_at_most(
        uniflow().arg("start").arg("--from-specs").arg(&path),
        Duration::from_secs(30),
    )
    .expect("uniflow refuses the file instead of serving it");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let file = path.display().to_string();
    for want in [
        format!(
            "{file}: spec `s` field `name`: duplicate name `s` in namespace `default`: specs #0 and #2 both have it"
        ),
        // The rest of the file is reported with it.
        format!("{file}: spec `odd` field `kind`: unknown kind `wat`"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
}

#[test]
fn start_with_nothing_to_run_warns_and_a_redirected_log_has_no_colour() {
    let empty = spec_file("empty.yaml", "");
    let other = spec_file(
        "other.yaml",
        "- {kind: snippet, name: s, namespace: other, language: text, code: x}\n",
    );
    let runs: [&[&std::ffi::OsStr]; 3] = [
        &["start".as_ref()],
        &["start".as_ref(), "--from-specs".as_ref(), empty.as_os_str()],
        &["start".as_ref(), "--from-specs".as_ref(), other.as_os_str()],
    ];
    for (i, args) in runs.into_iter().enumerate() {
        let log = std::env::temp_dir().join(format!(
            "uniflow-cli-{}-nothing-{i}.log",
            std::process::id()
        ));
        let child = uniflow()
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let warned = loop {
            let text = std::fs::read_to_string(&log).unwrap();
            if text.contains("has no specs") || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        terminate(&child);
        let out = child.wait_with_output().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            warned.contains("WARN") && warned.contains("namespace `default` has no specs"),
            "run {i} ({args:?}) did not warn:\n{text}"
        );
        assert!(out.status.success(), "run {i}: {:?}\n{text}", out.status);
        assert!(
            !text.contains('\u{1b}'),
            "escape codes in a file:\n{text:?}"
        );
    }
}

/// Starts a workflow whose `GET /slow` takes `wait`, sends that request, sends SIGTERM while
/// it is in flight, and returns how long the process took to exit, its stderr, and the
/// request's raw answer.
async fn stop_with_a_request_in_flight(
    configure: impl FnOnce(&mut Command, &std::path::Path),
    wait: &str,
) -> (Duration, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = free_port();
    let path = spec_file(
        &format!("slow-{port}.yaml"),
        &format!(
            "- {{kind: listener, name: web, protocol: http, host: 127.0.0.1, port: {port}, ports: {{out: [{{name: router, port: in}}]}}}}\n\
             - {{kind: router, name: router, routes: [{{method: GET, path: /slow, port: out}}], ports: {{out: [{{name: wait, port: in}}]}}}}\n\
             - {{kind: sleep, name: wait, interval: {wait}, ports: {{out: [{{name: done, port: in}}]}}}}\n\
             - {{kind: snippet, name: done, language: text, code: done}}\n"
        ),
    );
    let dir = path.with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = uniflow();
    cmd.current_dir(&dir)
        .arg("start")
        .arg("--from-specs")
        .arg(&path);
    configure(&mut cmd, &dir);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_listener(addr).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&request("GET", "/slow", &[], b""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    terminate(&child);
    let stopping = Instant::now();
    let deadline = stopping + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "uniflow did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = stopping.elapsed();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {:?}:\n{stderr}", out.status);
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    (took, stderr, answer)
}

#[tokio::test]
async fn the_shutdown_timeout_bounds_the_wait_for_in_flight_requests() {
    type Configure = fn(&mut Command, &std::path::Path);
    let ways: [(&str, Configure); 3] = [
        ("flag", |cmd, _| {
            cmd.args(["--shutdown-timeout", "300ms"]);
        }),
        ("variable", |cmd, _| {
            cmd.env("UNIFLOW_SHUTDOWN_TIMEOUT", "300ms");
        }),
        ("file", |_, dir| {
            std::fs::write(
                dir.join(".uniflow.toml"),
                "[shutdown]\ntimeout = \"300ms\"\n",
            )
            .unwrap();
        }),
    ];
    for (way, configure) in ways {
        let (took, stderr, answer) = stop_with_a_request_in_flight(configure, "30s").await;
        // The listener alone would wait 10 s; the request alone 30 s.
        assert!(
            took < Duration::from_secs(5),
            "{way}: took {took:?} to exit:\n{stderr}"
        );
        assert!(
            stderr.contains("did not finish within 300ms"),
            "{way}:\n{stderr}"
        );
        assert!(!answer.starts_with(b"HTTP/1.1 200"), "{way}: {answer:?}");
    }
}

/// A request that ends within the shutdown timeout is answered, also one longer than the
/// default 10 seconds: the listener sets no bound of its own on the wait.
#[tokio::test]
async fn a_request_that_ends_within_the_shutdown_timeout_is_answered() {
    let stop = |timeout: &'static str, wait| {
        stop_with_a_request_in_flight(
            move |cmd, _| {
                cmd.args(["--shutdown-timeout", timeout]);
            },
            wait,
        )
    };
    let (short, long) = tokio::join!(stop("20s", "1s"), stop("30s", "11s"));
    for (_, stderr, answer) in [short, long] {
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}\n{stderr}"
        );
        assert!(stderr.contains("stopped"), "{stderr}");
    }
}

#[test]
fn a_shutdown_timeout_without_a_unit_is_refused() {
    let out = run_to_end(uniflow().args(["start", "--shutdown-timeout", "30"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("`30` has no unit"), "{stderr}");
}

/// `uniflow start` serving `GET /` -> `pong` on a free port, run by `sh` after `ulimit`
/// with `limit` (such as `-Sn 256`); returns once it listens, with the port and its log.
async fn start_under_ulimit(limit: &str) -> (std::process::Child, u16, std::path::PathBuf) {
    let port = free_port();
    let path = spec_file(
        &format!("files-{port}.yaml"),
        &format!(
            "- {{kind: listener, name: web, protocol: http, host: 127.0.0.1, port: {port}, ports: {{out: [{{name: pong, port: in}}]}}}}\n\
             - {{kind: snippet, name: pong, language: text, code: pong}}\n"
        ),
    );
    let log = path.with_extension("log");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(r#"ulimit {limit} && exec "$0" "$@""#))
        .arg(env!("CARGO_BIN_EXE_uniflow"))
        .args(["start", "--from-specs"])
        .arg(&path)
        .current_dir(std::env::temp_dir())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "uniflow did not listen:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (child, port, log)
}

/// `n` connections to `port`, each with a `GET /` sent and its answer not read.
async fn hold(port: u16, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    held
}

/// Started with a soft limit of 256 open files, `start` raises it to the hard limit, so 600
/// connections held open at once are all answered. Without the raise, `accept` fails past
/// about 250 descriptors and the rest wait for a connection to close, which none of these does
/// within the test's 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_raises_the_open_files_limit_and_serves_more_connections_than_it_started_with() {
    use tokio::io::AsyncReadExt;
    const HELD: usize = 600;
    // The test holds the client ends, so it needs the room itself.
    let room = uniflow::limits::raise_open_files().unwrap().now;
    if room.is_some_and(|n| n < 2 * HELD as u64) {
        eprintln!(
            "skipped: the hard limit on open files ({room:?}) leaves no room for {HELD} connections"
        );
        return;
    }
    let (mut child, port, log) = start_under_ulimit("-Sn 256").await;

    // /proc/PID/limits: "Max open files            <soft>    <hard>    files".
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(
        files[0], files[1],
        "the soft limit is not the hard one:\n{limits}"
    );
    assert_ne!(files[0], "256", "the soft limit was not raised:\n{limits}");

    let mut held = hold(port, HELD).await;
    let answers = futures_util::future::join_all(held.iter_mut().map(|stream| async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got.ends_with(b"\r\n\r\npong") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    }));
    let answers = tokio::time::timeout(Duration::from_secs(20), answers).await;
    drop(held);
    terminate(&child);
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let answers = answers
        .unwrap_or_else(|_| panic!("not every held connection was answered in 20 s:\n{text}"));
    let answered = answers
        .iter()
        .filter(|a| a.starts_with(b"HTTP/1.1 200"))
        .count();
    assert_eq!(answered, HELD, "{text}");
}

/// A hard limit on open files too low for a server is named in a warning at start.
#[tokio::test]
async fn start_warns_when_the_hard_limit_on_open_files_is_low() {
    let (mut child, _, log) = start_under_ulimit("-n 1000").await;
    terminate(&child);
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("WARN") && text.contains("the open files limit is 1000"),
        "{text}"
    );
}

/// At its limit on open files a server waits for connections to close rather than failing,
/// says so once per streak of failed accepts rather than every 10 ms, and serves again after.
#[tokio::test]
async fn at_the_open_files_limit_the_server_waits_tells_once_and_recovers() {
    let (mut child, port, log) = start_under_ulimit("-n 64").await;
    // More connections than the server has descriptors left, held open for half a second.
    let held = hold(port, 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(held);
    // Served again, and every streak of failures has ended.
    let answer = crate::support::get(port, "/", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        let streaks = text.matches("accept failed").count();
        if streaks > 0 && streaks == text.matches("accepting connections again").count()
            || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    terminate(&child);
    child.wait().unwrap();
    let told = text.matches("accept failed").count();
    let failures: u64 = text
        .lines()
        .filter(|l| l.contains("accepting connections again"))
        .filter_map(|l| {
            l.split("failures=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    // Half a second of retries every 10 ms is some 50 failures; a warning each would be
    // as many lines. A connection that closes meanwhile ends a streak, so there may be more
    // than one, but a few.
    assert!(
        told >= 1 && failures >= 20 && told * 5 <= failures as usize,
        "{told} warnings for {failures} failed accepts:\n{text}"
    );
    assert_eq!(answer, (200, b"pong".to_vec()), "{text}");
}
