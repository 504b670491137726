//! The live runtime, as users run it: `uniflow start` over a SQLite file or a PostgreSQL
//! database, changed by `uniflow apply` and `uniflow delete` from another process.
//!
//! PostgreSQL tests run against `UNIFLOW_TEST_POSTGRES_URL` (a server whose user may create
//! databases); without it they say they were skipped, unless `UNIFLOW_REQUIRE_POSTGRES=1`
//! (as `.ci/run` sets), which makes them fail instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) use crate::support::Instance;
use crate::support::free_port;

/// A directory of its own per test, with the files it writes.
pub(crate) struct Place {
    dir: PathBuf,
    url: String,
}

static PLACES: AtomicUsize = AtomicUsize::new(0);

impl Place {
    pub(crate) fn sqlite(test: &str) -> Place {
        let dir = std::env::temp_dir().join(format!(
            "uniflow-live-{}-{test}-{}",
            std::process::id(),
            PLACES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("uniflow.db").display());
        Place { dir, url }
    }

    /// A directory of its own, with the store inside the `start` process (`mem://`).
    pub(crate) fn mem(test: &str) -> Place {
        let mut place = Place::sqlite(test);
        place.url = "mem://".to_owned();
        place
    }

    /// A fresh database on the test server, or `None` (skipped) without one.
    fn postgres(test: &str) -> Option<Place> {
        let Ok(server) = std::env::var("UNIFLOW_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var("UNIFLOW_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "UNIFLOW_REQUIRE_POSTGRES=1 but UNIFLOW_TEST_POSTGRES_URL is not set"
            );
            eprintln!(
                "skipped {test}: set UNIFLOW_TEST_POSTGRES_URL to a PostgreSQL server to run it (scripts/postgres starts one)"
            );
            return None;
        };
        let mut place = Place::sqlite(test);
        let database = format!("uniflow_live_{}_{}", std::process::id(), test);
        let status = Command::new("psql")
            .arg(&server)
            .args(["-q", "-c", &format!("CREATE DATABASE {database}")])
            .status()
            .expect("psql runs");
        assert!(status.success(), "cannot create database {database}");
        // The server URL's path names its database; ours replaces it.
        let (base, query) = server.split_once('?').unwrap_or((&server, ""));
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        place.url = if query.is_empty() {
            format!("{base}/{database}")
        } else {
            format!("{base}/{database}?{query}")
        };
        Some(place)
    }

    pub(crate) fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn uniflow(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_uniflow"));
        cmd.current_dir(&self.dir)
            .env("UNIFLOW_DATABASE_URL", &self.url)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        cmd
    }

    /// Runs a verb to its end.
    fn run(&self, args: &[&str]) -> Output {
        self.uniflow()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("uniflow runs")
    }

    /// Runs a verb that must succeed; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "uniflow {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `uniflow start` with `args`, waiting until `port` accepts.
    pub(crate) async fn start(&self, args: &[&str], port: u16) -> Instance {
        let mut command = self.uniflow();
        command.arg("start").args(args);
        let log = self.dir.join(format!("start-{port}.log"));
        Instance::spawn(command, log, &[port]).await
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A keep-alive HTTP/1.1 connection that reads one response per request.
struct Conn(TcpStream);

impl Conn {
    async fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(addr(port)).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Conn(stream)
    }

    /// `GET path`: the status and body, or why the connection failed.
    async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.0
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .ok_or_else(|| format!("no content-length in {head:?}"))?;
                if buf.len() >= end + 4 + length {
                    let status = head
                        .split(' ')
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| format!("bad head {head:?}"))?;
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                    return Ok((status, body.into_owned()));
                }
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.0.read(&mut chunk))
                .await
                .map_err(|_| "no answer within 10s".to_owned())?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "connection closed after {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The body of `GET path` on a new connection.
async fn get(port: u16, path: &str) -> String {
    let (status, body) = Conn::open(port).await.get(path).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `GET path` until it answers `want`; returns how long that took.
pub(crate) async fn until_answer(port: u16, path: &str, want: &str) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(mut conn) = TcpStream::connect(addr(port)).await.map(Conn)
            && let Ok((200, body)) = conn.get(path).await
            && body == want
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "GET {path} on {port} never answered {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A ping flow on `{{ .PORT }}` (given by `-e PORT=...`), answering `answer`.
fn ping(answer: &str) -> String {
    format!(
        "- {{kind: listener, name: listener, protocol: http, port: '{{{{ .PORT }}}}', ports: {{out: [{{name: router, port: in}}]}}}}\n\
         - {{kind: router, name: router, routes: [{{method: GET, path: /ping, port: 'out[0]'}}], ports: {{'out[0]': [{{name: pong, port: in}}]}}}}\n\
         - {{kind: snippet, name: pong, language: text, code: {answer}}}\n"
    )
}

/// A ping flow on a fixed port.
fn ping_on(port: u16, answer: &str) -> String {
    ping(answer).replace("'{{ .PORT }}'", &port.to_string())
}

// ---------------------------------------------------------------------------------------
// apply, get, delete

fn round_trip(place: &Place) {
    let specs = place.file("specs.yaml", &ping_on(1, "pong"));
    let table = place.ok(&["apply", "specs", "-f", specs.to_str().unwrap()]);
    let header = table.lines().next().unwrap();
    for column in ["ID", "KIND", "NAME", "NAMESPACE"] {
        assert!(header.contains(column), "{table}");
    }
    assert!(
        table.contains("listener") && table.contains("pong"),
        "{table}"
    );
    // `get -o yaml` reads back with `apply -f`, keeping the ids.
    let yaml = place.ok(&["get", "specs", "-o", "yaml"]);
    let again = place.file("again.yaml", &yaml);
    place.ok(&["apply", "nodes", "-f", again.to_str().unwrap()]);
    assert_eq!(place.ok(&["get", "specs", "-o", "yaml"]), yaml);
    assert_eq!(
        place
            .ok(&["get", "specs", "pong", "-o", "json"])
            .matches("\"kind\"")
            .count(),
        1
    );

    // Secrets: masked in the table, whole in json and yaml.
    let secrets = place.file("secrets.yaml", "- {name: db, data: {password: hunter2}}\n");
    let shown = place.ok(&["apply", "secrets", "-f", secrets.to_str().unwrap()]);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!place.ok(&["get", "secrets"]).contains("hunter2"));
    assert!(
        place
            .ok(&["get", "secrets", "-o", "json"])
            .contains("hunter2")
    );

    // A name that is not there fails, after printing what is.
    let missing = place.run(&["get", "specs", "pong", "ghost"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found: spec ghost"));

    // Deleting `pong` warns that the router still links to it.
    let deleted = place.run(&["delete", "specs", "pong"]);
    assert!(deleted.status.success());
    let stderr = String::from_utf8_lossy(&deleted.stderr);
    assert!(stderr.contains("still links to deleted `pong`"), "{stderr}");
    assert_eq!(
        place
            .ok(&["get", "specs", "-o", "json"])
            .matches("\"kind\"")
            .count(),
        2
    );
    // Nothing named: refused. --all: everything.
    let refused = place.run(&["delete", "specs"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--all"));
    place.ok(&["delete", "specs", "--all"]);
    assert_eq!(place.ok(&["get", "specs", "-o", "json"]).trim(), "[]");
    place.ok(&["delete", "secrets", "-f", secrets.to_str().unwrap()]);
    assert_eq!(place.ok(&["get", "secrets", "-o", "json"]).trim(), "[]");
}

#[test]
fn apply_get_delete_round_trip_on_sqlite() {
    round_trip(&Place::sqlite("round-trip"));
}

#[test]
fn apply_get_delete_round_trip_on_postgres() {
    if let Some(place) = Place::postgres("round_trip") {
        round_trip(&place);
    }
}

#[test]
fn apply_refuses_a_bad_file_whole_and_warns_about_a_link_to_a_node_not_there_yet() {
    let place = Place::sqlite("bad-apply");
    let bad = place.file(
        "bad.yaml",
        "- {kind: snippet, name: ok, language: text, code: fine}\n\
         - {kind: wat, name: odd}\n\
         - {kind: snippet, name: js, language: javascript, code: 'export default function ('}\n",
    );
    let out = place.run(&["apply", "specs", "-f", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let file = bad.display().to_string();
    assert!(
        stderr.contains(&format!("{file}: spec `odd` field `kind`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}: spec `js` field `code`")),
        "{stderr}"
    );
    assert_eq!(
        place.ok(&["get", "specs", "-o", "json"]).trim(),
        "[]",
        "nothing stored"
    );

    let dangling = place.file(
        "dangling.yaml",
        "- {kind: snippet, name: a, language: text, code: a, ports: {out: [{name: later, port: in}]}}\n",
    );
    let out = place.run(&["apply", "specs", "-f", dangling.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no node `later` yet"));
    // --dry-run stores nothing.
    let more = place.file(
        "more.yaml",
        "- {kind: snippet, name: b, language: text, code: b}\n",
    );
    place.ok(&["apply", "specs", "-f", more.to_str().unwrap(), "--dry-run"]);
    assert_eq!(
        place
            .ok(&["get", "specs", "-o", "json"])
            .matches("\"kind\"")
            .count(),
        1
    );
}

#[test]
fn the_verbs_refuse_mem_and_bad_arguments_clearly() {
    let place = Place::sqlite("verbs");
    let mut cmd = place.uniflow();
    cmd.env("UNIFLOW_DATABASE_URL", "mem://");
    let out = cmd.args(["get", "specs"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("lives inside one process") && stderr.contains("sqlite://"),
        "{stderr}"
    );
    let out = place.run(&["get", "widgets"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown resource `widgets`"));
    let out = place.run(&["start", "-e", "PORT"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`PORT` is not KEY=VALUE"));
}

#[test]
fn a_file_that_is_not_a_database_fails_clearly_at_start() {
    let mut place = Place::sqlite("corrupt");
    let file = place.file("broken.db", &"not a database ".repeat(1000));
    place.url = format!("sqlite://{}", file.display());
    let out = place.run(&["start"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("broken.db"), "{stderr}");
}

#[test]
fn an_unreachable_postgres_fails_clearly_without_the_password() {
    let place = Place::sqlite("unreachable");
    let port = free_port();
    let url = format!("postgres://uniflow:s3cret@127.0.0.1:{port}/uniflow");
    let started = Instant::now();
    let out = place
        .uniflow()
        .env("UNIFLOW_DATABASE_URL", &url)
        .arg("start")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("s3cret"), "the password leaked: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

// ---------------------------------------------------------------------------------------
// reload

#[tokio::test]
async fn a_running_instance_reloads_a_changed_snippet_on_a_kept_connection() {
    let place = Place::sqlite("reload");
    let port = free_port();
    let v1 = place.file("v1.yaml", &ping_on(port, "one"));
    let instance = place
        .start(&["--from-specs", v1.to_str().unwrap()], port)
        .await;
    let mut kept = Conn::open(port).await;
    assert_eq!(kept.get("/ping").await.unwrap(), (200, "one".to_owned()));
    let v2 = place.file("v2.yaml", &ping_on(port, "two"));
    place.ok(&["apply", "specs", "-f", v2.to_str().unwrap()]);
    until_answer(port, "/ping", "two").await;
    // The kept-alive connection's next request runs on the new generation.
    assert_eq!(kept.get("/ping").await.unwrap(), (200, "two".to_owned()));
    let log = instance.log();
    assert!(log.contains("loaded a new generation"), "{log}");
    // The listener did not restart: it logged `listening` once.
    assert_eq!(log.matches("listening").count(), 1, "{log}");
}

#[tokio::test]
async fn a_changed_or_deleted_secret_reloads_the_specs_bound_to_it() {
    let place = Place::sqlite("secret");
    let port = free_port();
    let flow = place.file(
        "flow.yaml",
        &ping_on(port, "'{{ .MSG }}'").replace(
            "code: '{{ .MSG }}'}",
            "code: '{{ .MSG }}', env: {MSG: [{name: greeting, value: '{{ .text }}'}]}}",
        ),
    );
    let secret = place.file("secret.yaml", "- {name: greeting, data: {text: hello}}\n");
    let instance = place
        .start(
            &[
                "--from-specs",
                flow.to_str().unwrap(),
                "--from-secrets",
                secret.to_str().unwrap(),
            ],
            port,
        )
        .await;
    assert_eq!(get(port, "/ping").await, "hello");
    let changed = place.file(
        "changed.yaml",
        "- {name: greeting, data: {text: bonjour}}\n",
    );
    place.ok(&["apply", "secrets", "-f", changed.to_str().unwrap()]);
    until_answer(port, "/ping", "bonjour").await;
    // Deleted by name: the spec no longer binds; its running version keeps serving, and the
    // log says why without the secret's data.
    place.ok(&["delete", "secrets", "greeting"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !instance.log().contains("env.MSG") {
        assert!(Instant::now() < deadline, "{}", instance.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(port, "/ping").await, "bonjour");
    assert!(
        !instance.log().contains("bonjour"),
        "secret data in the log"
    );
}

#[tokio::test]
async fn a_changed_chart_rebuilds_its_instances() {
    let place = Place::sqlite("chart");
    let port = free_port();
    let chart = |word: &str| {
        format!(
            "- name: greeter\n  specs: [{{kind: snippet, name: inner, language: text, code: '{{{{ .WORD }}}}{word}'}}]\n  \
             ports: {{in: [{{name: inner, port: in}}], out: [{{name: inner, port: out}}]}}\n  \
             env: {{WORD: [{{value: '{{{{ .word }}}}'}}]}}\n"
        )
    };
    let flow = place.file(
        "flow.yaml",
        &ping_on(port, "x").replace(
            "- {kind: snippet, name: pong, language: text, code: x}",
            "- {kind: greeter, name: pong, word: chart-hi}",
        ),
    );
    let charts = place.file("charts.yaml", &chart(""));
    let _instance = place
        .start(
            &[
                "--from-specs",
                flow.to_str().unwrap(),
                "--from-charts",
                charts.to_str().unwrap(),
            ],
            port,
        )
        .await;
    assert_eq!(get(port, "/ping").await, "chart-hi");
    let changed = place.file("changed.yaml", &chart("!"));
    place.ok(&["apply", "charts", "-f", changed.to_str().unwrap()]);
    until_answer(port, "/ping", "chart-hi!").await;
}

async fn two_instances_serve_one_apply(place: &Place) {
    let (a, b) = (free_port(), free_port());
    let flow = place.file("flow.yaml", &ping("one"));
    place.ok(&["apply", "specs", "-f", flow.to_str().unwrap()]);
    let _first = place.start(&["-e", &format!("PORT={a}")], a).await;
    let _second = place.start(&["-e", &format!("PORT={b}")], b).await;
    assert_eq!(get(a, "/ping").await, "one");
    assert_eq!(get(b, "/ping").await, "one");
    let changed = place.file("changed.yaml", &ping("two"));
    place.ok(&["apply", "specs", "-f", changed.to_str().unwrap()]);
    until_answer(a, "/ping", "two").await;
    until_answer(b, "/ping", "two").await;
}

#[tokio::test]
async fn two_instances_on_one_sqlite_file_both_serve_one_apply() {
    two_instances_serve_one_apply(&Place::sqlite("two")).await;
}

#[tokio::test]
async fn two_instances_on_one_postgres_both_serve_one_apply() {
    if let Some(place) = Place::postgres("two") {
        two_instances_serve_one_apply(&place).await;
    }
}

#[tokio::test]
async fn a_reload_under_load_fails_no_request_and_resets_no_connection() {
    let place = Place::sqlite("load");
    let port = free_port();
    let v0 = place.file("v0.yaml", &ping_on(port, "v0"));
    let _instance = place
        .start(&["--from-specs", v0.to_str().unwrap()], port)
        .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            tokio::spawn(async move {
                let mut conn = Conn::open(port).await;
                let (mut ok, mut seen) = (0usize, std::collections::BTreeSet::new());
                while !stop.load(Ordering::Relaxed) {
                    match conn.get("/ping").await {
                        Ok((200, body)) => {
                            ok += 1;
                            seen.insert(body);
                        }
                        other => return Err(format!("after {ok} requests: {other:?}")),
                    }
                }
                Ok((ok, seen))
            })
        })
        .collect();
    for version in 1..=5 {
        let file = place.file("next.yaml", &ping_on(port, &format!("v{version}")));
        place.ok(&["apply", "specs", "-f", file.to_str().unwrap()]);
        until_answer(port, "/ping", &format!("v{version}")).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let (ok, seen) = client.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        assert!(ok > 0);
        assert!(seen.contains("v5"), "{seen:?}");
    }
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_generation_it_started_on() {
    let place = Place::sqlite("in-flight");
    let port = free_port();
    let slow = |answer: &str| {
        ping_on(port, answer).replace(
            "[{name: pong, port: in}]",
            "[{name: wait, port: in}]}}\n- {kind: sleep, name: wait, interval: 600ms, ports: {out: [{name: pong, port: in}]",
        )
    };
    let v1 = place.file("v1.yaml", &slow("old"));
    let _instance = place
        .start(&["--from-specs", v1.to_str().unwrap()], port)
        .await;
    let mut conn = Conn::open(port).await;
    let pending = tokio::spawn(async move {
        let first = conn.get("/ping").await;
        (first, conn)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v2 = place.file("v2.yaml", &slow("new"));
    place.ok(&["apply", "specs", "-f", v2.to_str().unwrap()]);
    let (first, mut conn) = pending.await.unwrap();
    assert_eq!(first.unwrap(), (200, "old".to_owned()));
    until_answer(port, "/ping", "new").await;
    assert_eq!(conn.get("/ping").await.unwrap(), (200, "new".to_owned()));
}

#[tokio::test]
async fn a_listener_port_change_listens_on_the_new_port_then_frees_the_old() {
    let place = Place::sqlite("port");
    let (old, new) = (free_port(), free_port());
    let v1 = place.file("v1.yaml", &ping_on(old, "here"));
    let _instance = place
        .start(&["--from-specs", v1.to_str().unwrap()], old)
        .await;
    let mut kept = Conn::open(old).await;
    assert_eq!(kept.get("/ping").await.unwrap().1, "here");
    let v2 = place.file("v2.yaml", &ping_on(new, "there"));
    place.ok(&["apply", "specs", "-f", v2.to_str().unwrap()]);
    until_answer(new, "/ping", "there").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr(old)).await.is_ok() {
        assert!(Instant::now() < deadline, "the old port still listens");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// reference scenarios A14 and A15

const BASE: &str = "- {kind: listener, name: listener, protocol: http, port: PORT, ports: {out: [{name: router, port: in}]}}\n";

#[tokio::test]
async fn a14_env_literal_and_secret_templating() {
    let place = Place::sqlite("a14");
    let port = free_port();
    let specs = format!(
        "{}- {{kind: router, name: router, routes: [{{method: GET, path: /secret, port: 'out[0]'}}, {{method: GET, path: /literal, port: 'out[1]'}}], ports: {{'out[0]': [{{name: s, port: in}}], 'out[1]': [{{name: l, port: in}}]}}}}\n\
         - {{kind: snippet, name: s, language: text, code: '{{{{ .MSG }}}}', env: {{MSG: [{{name: greeting, value: '{{{{ .text }}}}'}}]}}}}\n\
         - {{kind: snippet, name: l, language: text, code: '{{{{ .WORD }}}}!', env: {{WORD: [{{value: hi}}]}}}}\n",
        BASE.replace("PORT", &port.to_string())
    );
    let specs = place.file("s.yaml", &specs);
    let secrets = place.file("x.yaml", "- {name: greeting, data: {text: hello}}\n");
    let mut mem = place.uniflow();
    mem.env("UNIFLOW_DATABASE_URL", "mem://");
    // Without the secret the file does not bind: start refuses it.
    let out = place
        .uniflow()
        .env("UNIFLOW_DATABASE_URL", "mem://")
        .args(["start", "--from-specs", specs.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("spec `s` field `env.MSG`: unsupported value"),
        "{stderr}"
    );
    let _instance = Instance {
        child: mem
            .args([
                "start",
                "--from-specs",
                specs.to_str().unwrap(),
                "--from-secrets",
                secrets.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        log: place.dir.join("none.log"),
    };
    until_answer(port, "/secret", "hello").await;
    assert_eq!(get(port, "/literal").await, "hi!");
}

#[tokio::test]
async fn a15_a_chart_is_a_node_kind_with_the_memory_store() {
    let place = Place::sqlite("a15");
    let port = free_port();
    let charts = place.file(
        "c.yaml",
        "- name: greeter\n  specs: [{kind: snippet, name: inner, language: text, code: '{{ .WORD }}'}]\n  \
         ports: {in: [{name: inner, port: in}], out: [{name: inner, port: out}]}\n  \
         env: {WORD: [{value: '{{ .word }}'}]}\n",
    );
    let specs = place.file(
        "s.yaml",
        &format!(
            "{}- {{kind: router, name: router, routes: [{{method: GET, path: /chart, port: 'out[0]'}}], ports: {{'out[0]': [{{name: g, port: in}}]}}}}\n\
             - {{kind: greeter, name: g, word: chart-hi}}\n",
            BASE.replace("PORT", &port.to_string())
        ),
    );
    let _instance = Instance {
        child: place
            .uniflow()
            .env("UNIFLOW_DATABASE_URL", "mem://")
            .args([
                "start",
                "--from-charts",
                charts.to_str().unwrap(),
                "--from-specs",
                specs.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        log: place.dir.join("none.log"),
    };
    until_answer(port, "/chart", "chart-hi").await;
}

#[tokio::test]
async fn a_changed_listener_on_its_port_never_refuses_a_connection() {
    let place = Place::sqlite("same-port");
    let port = free_port();
    let version = |v: u32| {
        ping_on(port, &format!("v{v}")).replace(
            "protocol: http,",
            &format!("protocol: http, idle_timeout: {}s,", 30 + v),
        )
    };
    let v0 = place.file("v0.yaml", &version(0));
    let instance = place
        .start(&["--from-specs", v0.to_str().unwrap()], port)
        .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // New connections, one request each, while the listener is replaced three times.
    let client = {
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let mut served = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let reply = crate::support::send(
                    addr(port),
                    &crate::support::request("GET", "/ping", &[], b""),
                )
                .await;
                if reply.status != 200 {
                    return Err(format!("after {served}: status {}", reply.status));
                }
                served += 1;
            }
            Ok(served)
        })
    };
    // A connection the old listener accepted, whose request comes only after the new
    // listener took over: it is answered, not reset.
    let mut early = Conn::open(port).await;
    for v in 1..=3 {
        let file = place.file("next.yaml", &version(v));
        place.ok(&["apply", "specs", "-f", file.to_str().unwrap()]);
        until_answer(port, "/ping", &format!("v{v}")).await;
    }
    let (status, _) = early.get("/ping").await.unwrap();
    assert_eq!(status, 200);
    stop.store(true, Ordering::Relaxed);
    let served = client.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    assert!(served > 0);
    // Each version was a new listener, on the socket of the one before.
    let log = instance.log();
    assert_eq!(log.matches("listening").count(), 4, "{log}");
}

#[test]
fn a_template_without_its_value_says_to_give_it_with_e() {
    let place = Place::sqlite("no-e");
    let flow = place.file("flow.yaml", &ping("pong"));
    let out = place
        .uniflow()
        .env("UNIFLOW_DATABASE_URL", "mem://")
        .args(["start", "--from-specs", flow.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("spec `listener` field `port`")
            && stderr.contains("they render only with `uniflow start -e KEY=VALUE`"),
        "{stderr}"
    );
}
