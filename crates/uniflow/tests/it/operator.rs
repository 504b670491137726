//! The operator endpoint (`start --admin`), over real HTTP.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::support::{Instance, Server, free_port, get};

fn dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("uniflow-operator-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ping(port: u16) -> String {
    format!(
        "- {{kind: listener, name: listener, protocol: http, port: {port}, ports: {{out: [{{name: router, port: in}}]}}}}\n\
         - {{kind: router, name: router, routes: [{{method: GET, path: /ping, port: 'out[0]'}}], ports: {{'out[0]': [{{name: pong, port: in}}]}}}}\n\
         - {{kind: snippet, name: pong, language: text, code: pong}}\n"
    )
}

/// `uniflow start --admin 127.0.0.1:<admin>` over `specs`, with `env` set; waits for both
/// ports.
async fn start(test: &str, specs: &str, port: u16, admin: u16, env: &[(&str, &str)]) -> Server {
    start_with(test, specs, port, admin, env, &[]).await
}

/// [`start`] with more files: (file name, text, the `start` flag that reads it).
async fn start_with(
    test: &str,
    specs: &str,
    port: u16,
    admin: u16,
    env: &[(&str, &str)],
    files: &[(&str, &str, &str)],
) -> Server {
    let dir = dir(test);
    std::fs::write(dir.join("specs.yaml"), specs).unwrap();
    let mut flags = Vec::new();
    for (name, text, flag) in files {
        std::fs::write(dir.join(name), text).unwrap();
        flags.extend([flag.to_string(), name.to_string()]);
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_uniflow"));
    command
        .current_dir(&dir)
        .envs(env.iter().copied())
        .args(["start", "--from-specs", "specs.yaml"])
        .args(&flags)
        .arg("--admin")
        .arg(format!("127.0.0.1:{admin}"))
        .env("NO_COLOR", "1");
    let instance = Instance::spawn(command, dir.join("log"), &[port, admin]).await;
    Server { instance, dir }
}

/// The value of the metric line that starts with `prefix`.
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn health_readiness_and_counters_that_follow_the_requests() {
    let (port, admin) = (free_port(), free_port());
    let server = start("counters", &ping(port), port, admin, &[]).await;
    assert_eq!(get(admin, "/healthz", &[]).await, (200, b"ok\n".to_vec()));
    let (status, body) = get(admin, "/readyz", &[]).await;
    let ready: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["ready"], true);
    assert!(ready["generation"].as_u64().unwrap() >= 1);

    for _ in 0..3 {
        assert_eq!(get(port, "/ping", &[]).await.0, 200);
    }
    assert_eq!(get(port, "/nope", &[]).await.0, 404);
    let (status, body) = get(admin, "/metrics", &[]).await;
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200);
    let requests = |class: &str| {
        metric(
            &text,
            &format!("uniflow_listener_requests_total{{listener=\"listener\",class=\"{class}\"}}"),
        )
    };
    assert_eq!(requests("2xx"), Some(3.0), "{text}");
    assert_eq!(requests("4xx"), Some(1.0), "{text}");
    assert_eq!(
        metric(
            &text,
            "uniflow_listener_requests_in_flight{listener=\"listener\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(metric(&text, "uniflow_nodes "), Some(3.0), "{text}");
    // Per node: the router and the snippet each handled the four requests' packets that
    // reached them (the 404 stops at the router).
    let node = |name: &str, kind: &str, metric_name: &str| {
        metric(
            &text,
            &format!("{metric_name}{{namespace=\"default\",node=\"{name}\",kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(
        node("router", "router", "uniflow_node_packets_total"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        node("pong", "snippet", "uniflow_node_packets_total"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        node("pong", "snippet", "uniflow_node_errors_total"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        node("pong", "snippet", "uniflow_node_latency_seconds_count"),
        Some(3.0),
        "{text}"
    );
    assert!(
        metric(&text, "uniflow_generation ").unwrap() >= 1.0,
        "{text}"
    );
    assert!(metric(&text, "uniflow_processes ").is_some(), "{text}");
    drop(server);
}

#[tokio::test]
async fn a_cpu_profile_of_the_running_server_parses() {
    let (port, admin) = (free_port(), free_port());
    let _server = start("profile", &ping(port), port, admin, &[]).await;
    let (status, body) = get(admin, "/debug/pprof/profile?seconds=1", &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    use pprof::protos::Message;
    let profile = pprof::protos::Profile::decode(body.as_slice()).expect("a pprof protobuf");
    assert!(!profile.string_table.is_empty());
    assert!(!profile.sample_type.is_empty());
    assert_eq!(
        get(admin, "/debug/pprof/profile?seconds=0", &[]).await.0,
        400
    );
}

#[tokio::test]
async fn a_spec_that_fails_to_start_makes_the_namespace_not_ready() {
    let (port, admin, taken_port) = (free_port(), free_port(), free_port());
    let dir = dir("not-ready");
    let url = format!("sqlite://{}", dir.join("uniflow.db").display());
    let server = start(
        "not-ready-server",
        &ping(port),
        port,
        admin,
        &[("UNIFLOW_DATABASE_URL", &url)],
    )
    .await;
    assert_eq!(get(admin, "/readyz", &[]).await.0, 200);
    // A second listener on a port something else holds: it cannot start.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", taken_port)).unwrap();
    std::fs::write(
        dir.join("more.yaml"),
        format!("- {{kind: listener, name: second, protocol: http, port: {taken_port}}}\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_uniflow"))
        .current_dir(&dir)
        .env("UNIFLOW_DATABASE_URL", &url)
        .args(["apply", "specs", "-f", "more.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = get(admin, "/readyz", &[]).await;
        if status == 503 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{text}\n{}", server.log());
    let ready: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ready["not_ready"][0]["spec"], "second", "{text}");
    let why = ready["not_ready"][0]["why"].as_str().unwrap();
    assert!(
        why.contains("cannot listen on") && why.contains(&format!(":{taken_port}")),
        "{text}"
    );
    // The rest keeps serving.
    assert_eq!(get(port, "/ping", &[]).await.0, 200);
    // The reload that followed the apply is counted with how far behind the store it ran: a
    // change written by another process, seen by polling the change log, within seconds.
    let (_, metrics) = get(admin, "/metrics", &[]).await;
    let text = String::from_utf8_lossy(&metrics);
    assert_eq!(
        metric(&text, "uniflow_watch_lag_seconds_count"),
        Some(1.0),
        "{text}"
    );
    let lag = metric(&text, "uniflow_watch_lag_seconds_sum").unwrap();
    assert!(lag > 0.0 && lag < 10.0, "{lag}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_token_guards_everything_but_the_probes_and_is_required_off_loopback() {
    let (port, admin) = (free_port(), free_port());
    let _server = start(
        "token",
        &ping(port),
        port,
        admin,
        &[("UNIFLOW_ADMIN_TOKEN", "s3cret-token")],
    )
    .await;
    assert_eq!(get(admin, "/healthz", &[]).await.0, 200);
    assert_eq!(get(admin, "/readyz", &[]).await.0, 200);
    assert_eq!(get(admin, "/metrics", &[]).await.0, 401);
    let wrong = [("Authorization".to_owned(), "Bearer nope".to_owned())];
    assert_eq!(get(admin, "/metrics", &wrong).await.0, 401);
    let right = [("Authorization".to_owned(), "Bearer s3cret-token".to_owned())];
    assert_eq!(get(admin, "/metrics", &right).await.0, 200);
    // The page's way: the token in the query, encoded.
    assert_eq!(get(admin, "/graph?token=s3cret%2Dtoken", &[]).await.0, 200);
    assert_eq!(get(admin, "/graph?token=nope", &[]).await.0, 401);

    // Off loopback without a token, start refuses, saying what to set.
    let out = Command::new(env!("CARGO_BIN_EXE_uniflow"))
        .current_dir(std::env::temp_dir())
        .args(["start", "--admin", "0.0.0.0:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is not loopback: set a token"), "{stderr}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let port = free_port();
    let dir = dir("json-logs");
    std::fs::write(dir.join("specs.yaml"), ping(port)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_uniflow"))
        .current_dir(&dir)
        .args([
            "--log-format",
            "json",
            "start",
            "--from-specs",
            "specs.yaml",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            object["level"].is_string() && object["fields"].is_object(),
            "{line}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_graph_shows_specs_with_secret_values_masked() {
    let (port, admin) = (free_port(), free_port());
    let specs = ping(port).replace(
        "code: pong}",
        "code: '{{ .WORD }}', env: {WORD: [{name: words, value: '{{ .word }}'}]}}",
    );
    let _server = start_with(
        "masked",
        &specs,
        port,
        admin,
        &[],
        &[(
            "secrets.yaml",
            "- {name: words, data: {word: hush-hush}}\n",
            "--from-secrets",
        )],
    )
    .await;
    assert_eq!(get(port, "/ping", &[]).await, (200, b"hush-hush".to_vec()));
    let (status, body) = get(admin, "/graph", &[]).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    let graph: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let pong = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "pong")
        .expect("pong in the graph");
    assert!(pong["spec"].as_str().unwrap().contains("******"), "{text}");
    assert!(!text.contains("hush-hush"), "{text}");
    assert_eq!(graph["links"].as_array().unwrap().len(), 2, "{text}");
}
