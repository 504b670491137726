//! The listener over sockets: TLS with a certificate generated here, the timeouts that cut
//! slow clients off, how a request's process exits, and spec problems reported together.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use uniflow_value::{Map, Value};

use crate::support::{client, connect_and_send, problems, read_until_closed, start};

fn pong_spec(extra: &str) -> String {
    format!(
        "- {{kind: listener, name: l, protocol: http, host: 127.0.0.1, port: 0, {extra} ports: {{out: [{{name: pong, port: in}}]}}}}\n- {{kind: test-const, name: pong, value: pong}}\n"
    )
}

/// A YAML block scalar holding `text`, indented for a field of a list item.
fn block(text: &str) -> String {
    let mut out = String::from("|\n");
    for line in text.lines() {
        out.push_str("      ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

struct Tls {
    cert: String,
    key: String,
}

fn self_signed() -> Tls {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
    Tls {
        cert: certified.cert.pem(),
        key: certified.signing_key.serialize_pem(),
    }
}

fn tls_client(tls: &Tls, addr: std::net::SocketAddr) -> reqwest::ClientBuilder {
    let root = reqwest::Certificate::from_pem(tls.cert.as_bytes()).expect("a PEM certificate");
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([root])
        .resolve("localhost", addr)
}

#[tokio::test]
async fn tls_serves_h2_and_http1_with_inline_pem() {
    let tls = self_signed();
    let yaml = format!(
        "- kind: listener\n  name: l\n  protocol: http\n  host: 127.0.0.1\n  port: 0\n  cert: {}\n  key: {}\n  ports: {{out: [{{name: pong, port: in}}]}}\n- {{kind: test-const, name: pong, value: pong}}\n",
        block(&tls.cert).replace("      ", "    "),
        block(&tls.key).replace("      ", "    "),
    );
    let running = start(&yaml).await;
    let addr = running.addrs[0];
    let url = format!("https://localhost:{}/ping", addr.port());

    let h2 = tls_client(&tls, addr).build().unwrap();
    let reply = h2.get(&url).send().await.expect("an HTTPS request");
    assert_eq!(reply.version(), http::Version::HTTP_2, "ALPN picks h2");
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.text().await.unwrap(), "pong");

    let h1 = tls_client(&tls, addr).http1_only().build().unwrap();
    let reply = h1.get(&url).send().await.expect("an HTTPS request");
    assert_eq!(reply.version(), http::Version::HTTP_11);
    assert_eq!(reply.text().await.unwrap(), "pong");

    // Plain HTTP to a TLS port gets no answer, and the listener keeps serving TLS.
    let plain = client().get(format!("http://{addr}/ping")).send().await;
    assert!(plain.is_err(), "{plain:?}");
    let again = h2.get(&url).send().await.expect("still serving");
    assert_eq!(again.text().await.unwrap(), "pong");
    running.stop().await;
}

#[tokio::test]
async fn tls_reads_pem_files() {
    let tls = self_signed();
    let dir = std::env::temp_dir().join(format!("uniflow-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &tls.cert).unwrap();
    std::fs::write(&key, &tls.key).unwrap();
    let running = start(&pong_spec(&format!(
        "cert: '{}', key: '{}',",
        cert.display(),
        key.display()
    )))
    .await;
    let addr = running.addrs[0];
    let reply = tls_client(&tls, addr)
        .build()
        .unwrap()
        .get(format!("https://localhost:{}/", addr.port()))
        .send()
        .await
        .expect("an HTTPS request");
    assert_eq!(reply.text().await.unwrap(), "pong");
    running.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tls_and_limit_problems_are_reported_together() {
    let text = problems(&pong_spec("body_limit: 'ten', "));
    assert!(
        text.contains("field `body_limit`") && text.contains("invalid size"),
        "{text}"
    );
    let text = problems(&pong_spec(
        "cert: /nonexistent/cert.pem, key: 'not pem', read_timeout: 0, ",
    ));
    assert!(text.contains("3 problems"), "{text}");
    assert!(
        text.contains("field `cert`: cannot read `/nonexistent/cert.pem`"),
        "{text}"
    );
    assert!(
        text.contains("field `key`: cannot read `not pem`"),
        "{text}"
    );
    assert!(
        text.contains("field `read_timeout`: must be more than zero"),
        "{text}"
    );
    let text = problems(&pong_spec("key: x, "));
    assert!(
        text.contains("field `cert`: `key` is set, so `cert` is required"),
        "{text}"
    );
    let tls = self_signed();
    let other = self_signed();
    let text = problems(&format!(
        "- kind: listener\n  name: l\n  protocol: http\n  port: 0\n  cert: {}\n  key: {}\n",
        block(&tls.cert).replace("      ", "    "),
        block(&other.key).replace("      ", "    "),
    ));
    assert!(
        text.contains("field `key`: the key does not fit the certificate"),
        "{text}"
    );
}

/// Asserts that a 300 ms timeout closed a connection `waited` after it started counting: not
/// before the timeout ran out (with slack for timer granularity), and well before a client
/// would notice (the sweep may take one more quarter, and a forced close one more sweep).
fn assert_timed_out(waited: Duration) {
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(2),
        "closed too late: {waited:?}"
    );
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let running = start(&pong_spec("header_timeout: 300ms,")).await;
    let started = Instant::now();
    let mut stream = connect_and_send(running.addrs[0], b"GET /ping HTTP/1.1\r\nHost: x\r\n").await;
    // One more header line, then silence: the headers never end.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"X-Slow: 1\r\n").await.unwrap();
    let read = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(read.is_some(), "the server kept a slow client for 5s");
    assert_timed_out(started.elapsed());
    running.stop().await;
}

#[tokio::test]
async fn a_keep_alive_connection_idle_past_the_header_timeout_is_closed() {
    let running = start(&pong_spec("header_timeout: 300ms,")).await;
    let mut stream =
        connect_and_send(running.addrs[0], b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answered = Instant::now();
    // The server answers, then waits for the next request's headers, which never come.
    let read = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(read.as_deref().expect("the server closes the connection"));
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 1, "{text}");
    assert_timed_out(answered.elapsed());
    running.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_when_idle() {
    let running = start(&pong_spec("idle_timeout: 300ms,")).await;
    let started = Instant::now();
    // A client that connects and never sends a byte (no request, so no header timer runs).
    let mut stream = connect_and_send(running.addrs[0], b"").await;
    let read = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(read.as_deref(), Some(&b""[..]), "closed without an answer");
    assert_timed_out(started.elapsed());
    running.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_still_serves_within_the_timeout() {
    let running = start(&pong_spec("idle_timeout: 400ms,")).await;
    let mut stream =
        connect_and_send(running.addrs[0], b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream
        .write_all(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let read = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&read);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    running.stop().await;
}

/// Waits until the test log holds `entry` once; exit hooks of a canceled request run when
/// the server notices the client is gone, a moment after the client acts.
async fn assert_logged(entry: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while uniflow_core::testing::logged(entry) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        uniflow_core::testing::logged(entry),
        1,
        "`{entry}` logged once"
    );
}

fn exit_spec(tag: &str, then: &str) -> String {
    format!(
        "- {{kind: listener, name: l, protocol: http, host: 127.0.0.1, port: 0, ports: {{out: [{{name: watch, port: in}}]}}}}\n\
         - {{kind: test-on-exit, name: watch, tag: {tag}, ports: {{out: [{{name: then, port: in}}]}}}}\n\
         - {then}\n"
    )
}

#[tokio::test]
async fn a_request_process_exits_with_the_answer_s_error() {
    // (exit tag, the node after the watch, the status answered, the exit logged)
    let cases = [
        (
            "exit-ok",
            "{kind: test-const, name: then, value: pong}",
            200,
            "exit-ok: ok",
        ),
        (
            "exit-500",
            "{kind: test-fail, name: then, message: boom}",
            500,
            "exit-500: request answered 500 Internal Server Error",
        ),
    ];
    for (tag, then, status, exit) in cases {
        let running = start(&exit_spec(tag, then)).await;
        let reply = client().get(running.url()).send().await.unwrap();
        assert_eq!(reply.status(), status, "{tag}");
        assert_logged(exit).await;
        running.stop().await;
    }
}

#[tokio::test]
async fn a_request_whose_client_goes_away_exits_its_process_canceled() {
    let running = start(&exit_spec(
        "exit-cancel",
        "{kind: test-delay, name: then, millis: 10000}",
    ))
    .await;
    let mut stream =
        connect_and_send(running.addrs[0], b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // Once the flow is waiting in test-delay, the client leaves.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.shutdown().await.unwrap();
    drop(stream);
    assert_logged("exit-cancel: request canceled").await;
    running.stop().await;
}

#[tokio::test]
async fn a_slow_body_answers_408() {
    let running = start(&pong_spec("read_timeout: 300ms,")).await;
    let started = Instant::now();
    let mut stream = connect_and_send(
        running.addrs[0],
        b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await;
    let read = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the server closes the connection");
    let text = String::from_utf8_lossy(&read);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    running.stop().await;
}

#[tokio::test]
async fn the_default_body_limit_is_16_mib() {
    let running = start(&pong_spec("")).await;
    let big = vec![b'x'; 16 * 1024 * 1024 + 1];
    let reply = client()
        .post(running.url())
        .body(big)
        .send()
        .await
        .expect("an answer");
    assert_eq!(reply.status(), 413);
    let fits = client()
        .post(running.url())
        .body(vec![b'x'; 1024 * 1024])
        .send()
        .await
        .expect("an answer");
    assert_eq!(fits.status(), 200);
    running.stop().await;
}

/// One keep-alive connection to each listener: a repeated request may get the last one's
/// payload, and every answer must still show the payload of its own request.
#[tokio::test]
async fn repeated_and_changing_requests_on_one_connection_see_their_own_payloads() {
    let running = start(
        "
- {kind: listener, name: routed, protocol: http, host: 127.0.0.1, port: 0, ports: {out: [{name: router, port: in}]}}
- kind: router
  name: router
  routes: [{method: GET, path: /users, port: 'out[0]'}, {method: GET, path: '/users/:id', port: 'out[0]'}]
  ports: {'out[0]': [{name: wrap, port: in}]}
- {kind: test-wrap, name: wrap, key: request}
- {kind: listener, name: plain, protocol: http, host: 127.0.0.1, port: 0, ports: {out: [{name: wrap, port: in}]}}
",
    )
    .await;
    let client = client();
    let payload = |addr, target: &'static str, header: Option<&'static str>| {
        let mut request = client.get(format!("http://{addr}{target}"));
        if let Some(value) = header {
            request = request.header("x-a", value);
        }
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            let answer: Value = yaml_serde::from_str(&text).unwrap();
            answer.get("request").cloned().expect("a wrapped request")
        }
    };
    let routed = running.addrs[0];
    let requests = [
        ("/users", None),
        ("/users", None),
        ("/users", None),
        ("/users", None),
        ("/users/1", None),
        ("/users/1", None),
        ("/users/2", None),
        ("/users?page=1", None),
        ("/users?page=1", None),
        ("/users?page=2", None),
        ("/users?page=2", Some("1")),
        ("/users?page=2", Some("1")),
        ("/users?page=2", Some("2")),
        ("/users", None),
    ];
    for (target, header) in requests {
        let got = payload(routed, target, header).await;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        assert_eq!(got.get("path"), Some(&Value::from(path)), "{target}");
        let params = match path.strip_prefix("/users/") {
            Some(id) => Value::Map([("id", Value::from(id))].into()),
            None => Value::Map(Map::new()),
        };
        assert_eq!(got.get("params"), Some(&params), "{target}");
        let pages = got.pick(&["query", "page"]).cloned();
        let want_pages = query
            .strip_prefix("page=")
            .map(|p| Value::from(vec![Value::from(p)]));
        assert_eq!(pages, want_pages, "{target}");
        let x_a = got.pick(&["header", "X-A"]).cloned();
        assert_eq!(
            x_a,
            header.map(|v| Value::from(vec![Value::from(v)])),
            "{target} {header:?}"
        );
    }
    // A listener that feeds no router sends the request as it came: no `params`.
    for _ in 0..3 {
        let got = payload(running.addrs[1], "/users", None).await;
        assert_eq!(got.get("path"), Some(&Value::from("/users")));
        assert_eq!(got.get("params"), None);
    }
    running.stop().await;
}
