//! Network benchmarks, run with `cargo bench -p uniflow-nodes-net --bench network`:
//!
//! - proxy overhead: the same load against an upstream workflow directly and through a
//!   `proxy` workflow in front of it, in one run, as requests per second and their ratio;
//!   once with an upstream that answers at once (`pong`, CPU-bound: every proxied request
//!   costs a second server and a client on the same cores) and once with an upstream that
//!   takes 10 ms per request (a service that does some work or I/O of its own);
//! - WebSocket echo: messages per second through `gateway` (its `out` linked to its own
//!   `in`), from clients that keep a window of messages in flight.
//!
//! Everything runs in this process on 127.0.0.1: the workflows on one tokio runtime, the load
//! on another, so both share the machine's cores as separate servers and clients would. The
//! allocator is jemalloc, as in the `uniflow` binary.
//! Environment: `BENCH_SECONDS` (per measurement, default 5), `BENCH_CONNECTIONS` (default
//! 64), `BENCH_SKIP_WS` (set: skip the WebSocket part).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use support::start;

mod support;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `connections` keep-alive HTTP/1.1 clients sending `GET /ping` for `seconds`; requests per
/// second.
async fn load_http(addr: SocketAddr, connections: u64, seconds: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get("/ping")
                    .header("host", "bench")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let response = send.send_request(req).await.expect("a response");
                assert_eq!(response.status(), 200);
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("a body")
                    .to_bytes();
                assert_eq!(body, "pong");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Let connections open, then count over the measured window only.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let count = done.load(Ordering::Relaxed) - start;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a load task");
    }
    count as f64 / elapsed
}

/// `connections` WebSocket clients, each keeping `window` messages in flight, for `seconds`;
/// echoed messages per second.
async fn load_ws(addr: SocketAddr, connections: u64, window: u64, seconds: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
                .await
                .expect("a websocket");
            let (mut tx, mut rx) = ws.split();
            for i in 0..window {
                tx.send(Message::text(format!("message {i}")))
                    .await
                    .unwrap();
            }
            while let Some(Ok(message)) = rx.next().await {
                if !message.is_text() {
                    continue;
                }
                done.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tx.send(message).await.unwrap();
            }
            let _ = tx.send(Message::Close(None)).await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let count = done.load(Ordering::Relaxed) - start;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    count as f64 / elapsed
}

fn upstream(delay_ms: u64) -> String {
    if delay_ms == 0 {
        "- {kind: listener, name: up, protocol: http, host: 127.0.0.1, port: 0, ports: {out: [{name: pong, port: in}]}}\n- {kind: test-const, name: pong, value: pong}\n".to_owned()
    } else {
        format!(
            "- {{kind: listener, name: up, protocol: http, host: 127.0.0.1, port: 0, ports: {{out: [{{name: wait, port: in}}]}}}}\n- {{kind: test-delay, name: wait, millis: {delay_ms}, ports: {{out: [{{name: pong, port: in}}]}}}}\n- {{kind: test-const, name: pong, value: pong}}\n"
        )
    }
}

fn main() {
    let seconds = env("BENCH_SECONDS", 5);
    let connections = env("BENCH_CONNECTIONS", 64);
    let servers = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("server runtime");
    let load = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("load runtime");
    println!(
        "network benchmarks: {seconds}s per measurement, {connections} connections, 127.0.0.1"
    );
    for delay in [0, 10] {
        let (up, up_addr) = servers.block_on(start(&upstream(delay)));
        let proxy_yaml = format!(
            "- {{kind: listener, name: front, protocol: http, host: 127.0.0.1, port: 0, ports: {{out: [{{name: proxy, port: in}}]}}}}\n- {{kind: proxy, name: proxy, urls: ['http://{up_addr}/']}}\n"
        );
        let (front, front_addr) = servers.block_on(start(&proxy_yaml));
        // Warm both paths (connection pools, allocator), then measure direct, proxied, direct.
        load.block_on(load_http(front_addr, connections, 1));
        let direct_a = load.block_on(load_http(up_addr, connections, seconds));
        let proxied = load.block_on(load_http(front_addr, connections, seconds));
        let direct_b = load.block_on(load_http(up_addr, connections, seconds));
        let direct = (direct_a + direct_b) / 2.0;
        let label = if delay == 0 {
            "upstream answers at once".to_owned()
        } else {
            format!("upstream takes {delay} ms")
        };
        println!(
            "proxy ({label}): direct {direct:.0} req/s (runs {direct_a:.0}, {direct_b:.0}), through proxy {proxied:.0} req/s, ratio {:.2}",
            proxied / direct
        );
        servers.block_on(front.unload());
        servers.block_on(up.unload());
    }
    let echo = "- {kind: listener, name: l, protocol: http, host: 127.0.0.1, port: 0, ports: {out: [{name: router, port: in}]}}\n- {kind: router, name: router, routes: [{method: GET, path: /ws, port: 'out[0]'}], ports: {'out[0]': [{name: gateway, port: io}]}}\n- {kind: gateway, name: gateway, protocol: websocket, ports: {out: [{name: gateway, port: in}]}}\n";
    if std::env::var_os("BENCH_SKIP_WS").is_none() {
        let (graph, addr) = servers.block_on(start(echo));
        for window in [1, 16] {
            let rate = load.block_on(load_ws(addr, connections, window, seconds));
            println!(
                "websocket echo through gateway: {rate:.0} messages/s ({connections} connections, {window} in flight each)"
            );
        }
        servers.block_on(graph.unload());
    }
}
