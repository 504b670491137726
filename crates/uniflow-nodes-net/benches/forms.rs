//! Form and multipart request bodies, run with `cargo bench -p uniflow-nodes-net --bench
//! forms`: how long one request takes, from its first byte sent to its answer read, for
//! bodies of n distinct fields (`application/x-www-form-urlencoded`, `k0=v&k1=v&...`) or n
//! parts (`multipart/form-data`), sent over 127.0.0.1 to a listener -> router whose one route
//! is `POST /items`:
//!
//! - `POST /items`: the route takes it, so the body is decoded (the listener's caps are
//!   raised to a million so that the decoding itself is measured);
//! - `PUT /items`: no route takes it, the router answers 405;
//! - `POST /items` to a listener with the default caps (10000 fields, 1000 parts).
//!
//! Each case runs three times (once when a run takes over a second); the fastest is shown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::start;

mod support;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn workflow(caps: &str) -> String {
    format!(
        "- {{kind: listener, name: l, protocol: http, host: 127.0.0.1, port: 0, body_limit: 64MiB, {caps} ports: {{out: [{{name: router, port: in}}]}}}}\n\
         - {{kind: router, name: router, routes: [{{method: POST, path: /items, port: 'out[0]'}}], ports: {{'out[0]': [{{name: ok, port: in}}]}}}}\n\
         - {{kind: test-const, name: ok, value: ok}}\n"
    )
}

fn form(fields: usize) -> (&'static str, String) {
    let body = (0..fields)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join("&");
    ("application/x-www-form-urlencoded", body)
}

fn multipart(parts: usize) -> (&'static str, String) {
    let mut body = String::new();
    for i in 0..parts {
        body.push_str(&format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n"
        ));
    }
    body.push_str("--XyZ--\r\n");
    ("multipart/form-data; boundary=XyZ", body)
}

/// The fastest of up to three requests, and the status answered.
async fn time(
    client: &reqwest::Client,
    addr: SocketAddr,
    method: reqwest::Method,
    (content_type, body): &(&'static str, String),
) -> (Duration, u16) {
    let mut best = Duration::MAX;
    let mut status = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let reply = client
            .request(method.clone(), format!("http://{addr}/items"))
            .header("content-type", *content_type)
            .body(body.clone())
            .send()
            .await
            .expect("an answer");
        status = reply.status().as_u16();
        reply.bytes().await.expect("a body");
        let took = started.elapsed();
        best = best.min(took);
        if took > Duration::from_secs(1) {
            break;
        }
    }
    (best, status)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client");
    runtime.block_on(async {
        let (raised, raised_addr) =
            start(&workflow("max_fields: 1000000, max_parts: 1000000,")).await;
        let (default, default_addr) = start(&workflow("")).await;
        println!(
            "| body | size | POST /items (decoded) | PUT /items (405) | POST /items, default caps |"
        );
        println!("|---|---|---|---|---|");
        let bodies = [10_000, 20_000, 40_000, 100_000]
            .map(|n| (format!("form, {n} fields"), form(n)))
            .into_iter()
            .chain([10_000, 100_000].map(|n| (format!("multipart, {n} parts"), multipart(n))));
        for (label, body) in bodies {
            let decoded = time(&client, raised_addr, reqwest::Method::POST, &body).await;
            let refused = time(&client, raised_addr, reqwest::Method::PUT, &body).await;
            let capped = time(&client, default_addr, reqwest::Method::POST, &body).await;
            let show = |(took, status): (Duration, u16)| format!("{status} in {took:.2?}");
            println!(
                "| {label} | {} KB | {} | {} | {} |",
                body.1.len() / 1000,
                show(decoded),
                show(refused),
                show(capped)
            );
        }
        raised.unload().await;
        default.unload().await;
    });
}
