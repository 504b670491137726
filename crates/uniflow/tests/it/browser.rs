//! The graph page of the operator endpoint, in a real browser: headless Chromium driven over
//! the DevTools protocol. Without Chromium the test says it was skipped and why, unless
//! `UNIFLOW_REQUIRE_CHROMIUM=1` (as `.ci/run` sets, after installing Debian's `chromium`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::free_port;

/// Headless Chromium with its DevTools endpoint; killed when dropped.
struct Chromium {
    child: Child,
    /// The DevTools HTTP address, `127.0.0.1:PORT`.
    devtools: String,
    _profile: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_binary() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|bin| {
            Command::new(bin)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

impl Chromium {
    /// Starts it, or says why it cannot (`None`: skipped).
    fn start(test: &str) -> Option<Chromium> {
        let Some(binary) = chromium_binary() else {
            assert!(
                std::env::var("UNIFLOW_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
                "UNIFLOW_REQUIRE_CHROMIUM=1 but no chromium is installed"
            );
            eprintln!(
                "skipped {test}: no chromium on this machine (Debian: apt-get install chromium)"
            );
            return None;
        };
        let profile = std::env::temp_dir().join(format!("uniflow-chromium-{}", std::process::id()));
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1200,700",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // It says where its DevTools endpoint listens on standard error.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut devtools = None;
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("DevTools listening on ws://") {
                devtools = url.split('/').next().map(str::to_owned);
                break;
            }
        }
        Some(Chromium {
            child,
            devtools: devtools.expect("chromium printed its DevTools address"),
            _profile: TempDir(profile),
        })
    }

    /// A DevTools session on a new page at `url`.
    async fn open(&self, url: &str) -> Page {
        let target: Value = devtools_put(&format!("http://{}/json/new?{url}", self.devtools)).await;
        let ws = target["webSocketDebuggerUrl"]
            .as_str()
            .expect("a page target");
        let (socket, _) = tokio_tungstenite::connect_async(ws)
            .await
            .expect("DevTools connects");
        Page { socket, next: 1 }
    }
}

/// `PUT` with an empty body, answered with JSON (what `/json/new` wants).
async fn devtools_put(url: &str) -> Value {
    let text = reqwest::Client::new()
        .put(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("DevTools answers")
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

struct Page {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Page {
    /// Calls a DevTools method and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let message = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), self.socket.next())
                .await
                .expect("DevTools answers")
                .expect("the session is open")
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// What `expression` (returning a JSON string) evaluates to in the page.
    async fn facts(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        let text = result["result"]["value"].as_str().unwrap_or("null");
        serde_json::from_str(text).unwrap_or(Value::Null)
    }

    /// Polls `expression` until `done` holds of its facts (at most 15 s); returns them.
    async fn until(&mut self, expression: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let facts = self.facts(expression).await;
            if done(&facts) {
                return facts;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed it: {facts}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The page's nodes, links and the figures of `pong`, as JSON.
const FACTS: &str = r#"JSON.stringify({
  nodes: [...document.querySelectorAll('.node')].map(e => e.dataset.node),
  links: [...document.querySelectorAll('.link')].map(e => e.dataset.from + '>' + e.dataset.to),
  pong: (document.querySelector('[data-figures="pong"]') || {}).textContent || '',
  status: document.getElementById('status').textContent,
})"#;

fn flow(port: u16, extra: bool) -> String {
    let mut text = format!(
        "- {{kind: listener, name: listener, protocol: http, port: {port}, ports: {{out: [{{name: router, port: in}}]}}}}\n\
         - {{kind: router, name: router, routes: [{{method: GET, path: /ping, port: 'out[0]'}}, {{method: GET, path: /hello, port: 'out[1]'}}], ports: {{'out[0]': [{{name: pong, port: in}}]{}}}}}\n\
         - {{kind: snippet, name: pong, language: text, code: pong}}\n",
        if extra {
            ", 'out[1]': [{name: hello, port: in}]"
        } else {
            ""
        }
    );
    if extra {
        text.push_str("- {kind: snippet, name: hello, language: text, code: hello}\n");
    }
    text
}

#[tokio::test]
async fn the_graph_page_shows_the_nodes_counts_requests_and_redraws_after_a_reload() {
    let Some(chromium) = Chromium::start("the_graph_page") else {
        return;
    };
    let (port, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("uniflow-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    std::fs::write(dir.join("v1.yaml"), flow(port, false)).unwrap();
    std::fs::write(dir.join("v2.yaml"), flow(port, true)).unwrap();
    let url = format!("sqlite://{}", dir.join("uniflow.db").display());
    let uniflow = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_uniflow"));
        cmd.current_dir(&dir)
            .env("UNIFLOW_DATABASE_URL", &url)
            .args(args);
        cmd
    };
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(
        uniflow(&[
            "start",
            "--from-specs",
            "v1.yaml",
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", admin))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "no operator endpoint");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let mut page = chromium.open(&format!("http://127.0.0.1:{admin}/")).await;
    let facts = page
        .until(FACTS, |f| {
            f["nodes"].as_array().is_some_and(|n| n.len() == 3)
        })
        .await;
    assert_eq!(
        facts["nodes"],
        json!(["listener", "router", "pong"]),
        "{facts}"
    );
    assert_eq!(
        facts["links"],
        json!(["listener>router", "router>pong"]),
        "{facts}"
    );

    // Requests: the snippet's figures count them.
    for _ in 0..20 {
        let reply = crate::support::send(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            &crate::support::request("GET", "/ping", &[], b""),
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    page.until(FACTS, |f| {
        f["pong"].as_str().is_some_and(|t| t.contains("· 20 pk"))
    })
    .await;

    // A change through the store: the page redraws with the new node and link.
    let out = uniflow(&["apply", "specs", "-f", "v2.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let facts = page
        .until(FACTS, |f| {
            f["nodes"].as_array().is_some_and(|n| n.len() == 4)
        })
        .await;
    assert_eq!(
        facts["nodes"],
        json!(["listener", "router", "pong", "hello"]),
        "{facts}"
    );
    assert!(
        facts["links"]
            .as_array()
            .unwrap()
            .contains(&json!("router>hello")),
        "{facts}"
    );
    assert!(
        facts["status"].as_str().unwrap().contains("generation 2"),
        "{facts}"
    );

    // Clicking a node shows its spec.
    page.call(
        "Runtime.evaluate",
        json!({"expression": "document.querySelector('[data-node=\"hello\"]').dispatchEvent(new MouseEvent('click'))"}),
    )
    .await;
    let spec = page
        .until(
            r#"JSON.stringify((document.getElementById('spec') || {}).textContent || '')"#,
            |s| {
                s.as_str()
                    .is_some_and(|t| t.contains("\"code\": \"hello\""))
            },
        )
        .await;
    assert!(
        spec.as_str().unwrap().contains("\"kind\": \"snippet\""),
        "{spec}"
    );

    let shot = page
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("graph-page.png");
    std::fs::write(&out, png).unwrap();
    eprintln!("screenshot: {}", out.display());
}
