//! Scripts share the server's threads with every other request: a script that runs long must
//! not hold up the rest.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use uniflow_spec::{Format, parse};

use crate::support::start;

const FLOW: &str = r"
- kind: listener
  name: listener
  protocol: http
  port: 8000
  ports:
    out: [{name: router, port: in}]
- kind: router
  name: router
  routes:
    - {method: GET, path: /spin, port: 'out[0]'}
    - {method: GET, path: /ping, port: 'out[1]'}
  ports:
    'out[0]': [{name: spin, port: in}]
    'out[1]': [{name: pong, port: in}]
- kind: snippet
  name: spin
  language: javascript
  timeout: 2s
  code: 'export default function () { while (true) {} }'
- {kind: snippet, name: pong, language: text, code: pong}
";

/// Sends one keep-alive `GET` on `stream` and reads its answer (status line to body).
fn get(stream: &mut TcpStream, path: &str) -> String {
    // One write, so the request is one segment and no delayed ACK adds to its time.
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    // The answers here are small and carry a Content-Length; read until the body is in.
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed the connection");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// With every worker thread of the runtime busy running a script, a ping on a new connection
/// and one on a connection opened before still answer at once; the scripts end at their
/// timeout with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_script_does_not_hold_up_other_requests() {
    let specs = parse(FLOW, Format::Yaml, None).unwrap();
    let (_graph, addr) = start(specs).await;
    // The client runs on threads of its own, so nothing it does waits on the server's runtime.
    let client = std::thread::spawn(move || {
        let mut kept = connect(addr);
        assert!(get(&mut kept, "/ping").ends_with("pong"));
        // As many spinning scripts as the runtime has workers, and one more.
        let spinners: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let answer = get(&mut connect(addr), "/spin");
                    (answer, started.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut slowest = Duration::ZERO;
        for stream in [&mut connect(addr), &mut kept] {
            for _ in 0..5 {
                let started = Instant::now();
                let answer = get(stream, "/ping");
                slowest = slowest.max(started.elapsed());
                assert!(
                    answer.starts_with("HTTP/1.1 200") && answer.ends_with("pong"),
                    "{answer}"
                );
            }
        }
        let spun: Vec<_> = spinners.into_iter().map(|s| s.join().unwrap()).collect();
        (slowest, spun)
    });
    let (slowest, spun) = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    assert!(
        slowest < Duration::from_millis(50),
        "a ping took {slowest:?} while scripts spun"
    );
    for (answer, took) in spun {
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(
            took >= Duration::from_secs(2),
            "a spin ended after {took:?}, before its timeout"
        );
    }
}
