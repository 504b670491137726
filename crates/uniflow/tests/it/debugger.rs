//! `start --debug`, driven as a user drives it: through a pipe (a script), and under tmux (a
//! terminal, with its line editor), with real requests paused at a breakpoint and released.

use std::io::{BufRead as _, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{free_port, request, send};

/// A workflow with two routes: `/ping` answered by `pong`, `/other` by `other`.
fn two_routes(port: u16) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("uniflow-debug-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("routes-{port}.yaml"));
    std::fs::write(
        &path,
        format!(
            "- {{kind: listener, name: listener, protocol: http, host: 127.0.0.1, port: {port}, ports: {{out: [{{name: router, port: in}}]}}}}\n\
             - kind: router\n  name: router\n  routes: [{{method: GET, path: /ping, port: 'out[0]'}}, {{method: GET, path: /other, port: 'out[1]'}}]\n  ports: {{'out[0]': [{{name: pong, port: in}}], 'out[1]': [{{name: other, port: in}}]}}\n\
             - {{kind: snippet, name: pong, language: text, code: pong}}\n\
             - {{kind: snippet, name: other, language: text, code: other}}\n"
        ),
    )
    .unwrap();
    path
}

/// `uniflow start --debug` with its stdout collected as it comes.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

fn collect(reader: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(reader);
        let mut buf = Vec::new();
        // Byte by byte to a newline or the prompt: the prompt has no newline after it.
        while reader.read_until(b' ', &mut buf).is_ok_and(|n| n > 0) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf));
            buf.clear();
        }
    });
    text
}

impl Session {
    fn start(specs: &std::path::Path) -> Session {
        let mut child = Command::new(env!("CARGO_BIN_EXE_uniflow"))
            .current_dir(std::env::temp_dir())
            .env("RUST_LOG", "info")
            .args(["start", "--debug", "--from-specs"])
            .arg(specs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        Session {
            child,
            stdin,
            out,
            err,
        }
    }

    /// How much has been printed so far: what a command prints comes after.
    fn mark(&self) -> usize {
        self.out.lock().unwrap().len()
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// What was printed after `mark`, once it has every one of `wanted`.
    async fn wait_for(&self, mark: usize, wanted: &[&str]) -> String {
        eventually(
            || {
                let since = self.out.lock().unwrap()[mark..].to_owned();
                wanted.iter().all(|w| since.contains(w)).then_some(since)
            },
            || {
                format!(
                    "{wanted:?} printed; printed:\n{}\nlog:\n{}",
                    &self.out.lock().unwrap()[mark..],
                    self.err.lock().unwrap()
                )
            },
        )
        .await
    }

    /// Sends `line`, then waits for what it prints to have every one of `wanted`; that.
    async fn ask(&mut self, line: &str, wanted: &[&str]) -> String {
        let mark = self.mark();
        self.send(line);
        self.wait_for(mark, wanted).await
    }

    /// Waits for the process to end; its exit status.
    async fn ended(&mut self) -> std::process::ExitStatus {
        let (child, err) = (&mut self.child, &self.err);
        eventually(
            || child.try_wait().unwrap(),
            || format!("uniflow to exit:\n{}", err.lock().unwrap()),
        )
        .await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for the paused request's answer, which must be `pong`; `why` it should come.
async fn answers_pong(paused: tokio::task::JoinHandle<crate::support::Reply>, why: &str) {
    let reply = tokio::time::timeout(Duration::from_secs(20), paused)
        .await
        .expect(why)
        .unwrap();
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, b"pong".as_slice())
    );
}

/// What `poll` gives once it gives something, asked every 20 ms for at most 20 s (generous: the
/// machine may be busy); fails naming what was awaited, as `waited` says.
async fn eventually<T>(mut poll: impl FnMut() -> Option<T>, waited: impl Fn() -> String) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = poll() {
            return found;
        }
        assert!(Instant::now() < deadline, "waited for {}", waited());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until something accepts on `addr`, or (`up` false) until nothing does.
async fn wait_for_listener_to_be(addr: std::net::SocketAddr, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_ok() != up {
        assert!(Instant::now() < deadline, "listening should be {up}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_listener(addr: std::net::SocketAddr) {
    wait_for_listener_to_be(addr, true).await;
}

#[tokio::test]
async fn a_breakpoint_pauses_one_request_until_continue_while_others_are_served() {
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut session = Session::start(&two_routes(port));
    wait_for_listener(addr).await;
    session.wait_for(0, &["(debug) "]).await;

    let shown = session.ask("break pong", &["\"symbol\": \"pong\""]).await;
    assert!(shown.contains("\"id\": 1"), "{shown}");

    let mark = session.mark();
    let paused = tokio::spawn(send(addr, request("GET", "/ping", &[], b"").leak()));
    let hit = session
        .wait_for(
            mark,
            &["\"symbol\": \"pong\"", "\"port\": \"in\"", "\"process\""],
        )
        .await;
    // A frame is JSON indented by 4 spaces.
    assert!(hit.contains("\n    \"port\": \"in\""), "{hit}");

    // Another route is served while the first request waits.
    let other = send(addr, &request("GET", "/other", &[], b"")).await;
    assert_eq!(
        (other.status, other.body.as_slice()),
        (200, b"other".as_slice())
    );
    assert!(
        !paused.is_finished(),
        "the paused request must wait for `continue`"
    );

    let frame = session
        .ask("frame", &["\"symbol\": \"pong\"", "\"port\": \"in\""])
        .await;
    assert!(!frame.contains("\"output\""), "not answered yet: {frame}");

    session
        .ask("symbol nope", &["Error: symbol 'nope' not found."])
        .await;
    session
        .ask("break nope", &["Error: symbol 'nope' not found."])
        .await;
    session
        .ask(
            "b pong nope",
            &["Error: port 'nope' not found on symbol 'pong'."],
        )
        .await;

    let table = session.ask("bps", &["ID", "SYMBOL", "pong"]).await;
    assert!(!table.contains("nope"), "{table}");

    let mark = session.mark();
    session.send("continue");
    answers_pong(paused, "continue releases the request").await;
    session.wait_for(mark, &["(debug) "]).await;

    // The ended request's process is listed, with its frames.
    let procs = session.ask("procs", &["ID", "STATUS", "exited"]).await;
    let id = procs
        .lines()
        .find(|l| l.contains("exited"))
        .and_then(|l| l.split_whitespace().find(|w| w.len() == 36))
        .unwrap_or_else(|| panic!("a process id in:\n{procs}"))
        .to_owned();
    let frames = session
        .ask(&format!("frms {id}"), &["PROCESS", "pong", "router"])
        .await;
    assert!(
        frames.contains("out[0]"),
        "the router's out-port frame: {frames}"
    );

    // The end of input quits, and the server stops gracefully.
    drop(session.stdin.take());
    let status = session.ended().await;
    assert!(
        status.success(),
        "{status:?}\n{}",
        session.err.lock().unwrap()
    );
    assert!(
        session.err.lock().unwrap().contains("stopped"),
        "{}",
        session.err.lock().unwrap()
    );
}

#[tokio::test]
async fn ctrl_c_while_paused_releases_the_request_and_stops_gracefully() {
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut session = Session::start(&two_routes(port));
    wait_for_listener(addr).await;
    session.ask("b", &["\"id\": 1"]).await;
    let mark = session.mark();
    let paused = tokio::spawn(send(addr, request("GET", "/ping", &[], b"").leak()));
    session.wait_for(mark, &["\"process\""]).await;
    let status = Command::new("kill")
        .args(["-INT", &session.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    answers_pong(paused, "Ctrl-C releases the paused request").await;
    let status = session.ended().await;
    assert!(
        status.success(),
        "{status:?}\n{}",
        session.err.lock().unwrap()
    );
}

/// `uniflow start --debug` in a tmux session of its own, as a person at a terminal runs it;
/// the session is killed when dropped.
struct Tmux {
    name: String,
}

impl Tmux {
    /// Starts the session on [`two_routes`] and waits for its server and prompt; `None` when
    /// tmux is not installed (a failure instead when `UNIFLOW_REQUIRE_TMUX=1`, as `.ci/run`
    /// sets).
    async fn prompt() -> Option<(Tmux, std::net::SocketAddr)> {
        let port = free_port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let tmux = Tmux::start(&two_routes(port), port)?;
        wait_for_listener(addr).await;
        tmux.wait_for(&["(debug) "], 1).await;
        Some((tmux, addr))
    }

    fn start(specs: &std::path::Path, port: u16) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                std::env::var_os("UNIFLOW_REQUIRE_TMUX").is_none_or(|v| v != "1"),
                "tmux is required (UNIFLOW_REQUIRE_TMUX=1) but not installed"
            );
            eprintln!("skipped: tmux is not installed");
            return None;
        }
        let tmux = Tmux {
            name: format!("uniflow-debug-{}-{port}", std::process::id()),
        };
        let command = format!(
            "{} start --debug --from-specs {}; sleep 30",
            env!("CARGO_BIN_EXE_uniflow"),
            specs.display()
        );
        let started = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            &tmux.name,
            "-x",
            "200",
            "-y",
            "60",
            &command,
        ]);
        assert!(started.status.success(), "{started:?}");
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.name])
            .args(args)
            .output()
            .unwrap()
    }

    /// Types `keys` (tmux's names: `Enter`, `Home`, `Up`, `Escape`; anything else as text).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.name];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-J", "-S", "-200"]).stdout)
            .into_owned()
    }

    /// The screen once it shows each of `wanted` at least `times` times.
    async fn wait_for(&self, wanted: &[&str], times: usize) -> String {
        eventually(
            || {
                let text = self.screen();
                wanted
                    .iter()
                    .all(|w| text.matches(w).count() >= times)
                    .then_some(text)
            },
            || format!("{wanted:?} {times} times on the screen:\n{}", self.screen()),
        )
        .await
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// Under tmux: the prompt, a line edited before it is sent, one recalled from the history, a
/// breakpoint, `continue`, `quit`.
#[tokio::test]
async fn the_prompt_works_on_a_terminal_under_tmux() {
    let Some((tmux, addr)) = Tmux::prompt().await else {
        return;
    };
    // The line is edited: its start is typed last, after Home.
    tmux.keys(&["ymbols", "Home", "s", "Enter"]);
    tmux.wait_for(&["NAMESPACE", "router"], 1).await;
    // The arrow brings the line back.
    tmux.keys(&["Up", "Enter"]);
    tmux.wait_for(&["NAMESPACE"], 2).await;
    tmux.keys(&["break pong", "Enter"]);
    tmux.wait_for(&["\"symbol\": \"pong\""], 1).await;
    let paused = tokio::spawn(send(addr, request("GET", "/ping", &[], b"").leak()));
    tmux.wait_for(&["\"port\": \"in\"", "\"process\""], 1).await;
    tmux.keys(&["continue", "Enter"]);
    answers_pong(paused, "continue releases the request").await;
    tmux.keys(&["quit", "Enter"]);
    // Quitting stops the server.
    wait_for_listener_to_be(addr, false).await;
}

/// Under tmux, Esc quits the prompt, as upstream's does, and the terminal is itself again.
#[tokio::test]
async fn escape_quits_the_prompt_under_tmux() {
    let Some((tmux, addr)) = Tmux::prompt().await else {
        return;
    };
    tmux.keys(&["Escape"]);
    wait_for_listener_to_be(addr, false).await;
    // The shell's `sleep 30` runs now: what is typed echoes as a cooked terminal echoes it,
    // line and all, which a terminal left raw would not.
    tmux.keys(&["typed", "Enter", "after"]);
    tmux.wait_for(&["typed\nafter"], 1).await;
}

/// Under tmux, a stop signal while the prompt waits for a key ends the session and leaves the
/// terminal as it was found: what is typed after echoes, line and all.
#[tokio::test]
async fn a_stop_signal_under_tmux_leaves_the_terminal_as_it_was() {
    let Some((tmux, addr)) = Tmux::prompt().await else {
        return;
    };
    // The pane runs a shell, whose child is uniflow.
    let shell = String::from_utf8(tmux.run(&["display", "-p", "#{pane_pid}"]).stdout).unwrap();
    let children = Command::new("pgrep")
        .args(["-P", shell.trim()])
        .output()
        .unwrap();
    let uniflow = String::from_utf8(children.stdout).unwrap();
    let status = Command::new("kill")
        .args(["-TERM", uniflow.trim()])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "no uniflow under the pane's shell {shell}"
    );
    wait_for_listener_to_be(addr, false).await;
    tmux.wait_for(&["stopped"], 1).await;
    tmux.keys(&["typed", "Enter", "after"]);
    tmux.wait_for(&["typed\nafter"], 1).await;
}
