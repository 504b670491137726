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
//!
//! A second table times `decode_body` alone, in process, on multipart bodies a client
//! plausibly sends: a form upload (three text fields and a 10 KiB file), a 1 MiB file, and
//! 1000 small fields (the default cap). Each is decoded in five batches of about 50 ms; the
//! fastest batch's mean is shown. `BENCH_DECODE_ONLY=1` runs only that table, and
//! `BENCH_BODY=TEXT` only its bodies whose label has TEXT in it (for a profiler).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use uniflow_nodes_net::payload::{BodyLimits, decode_body};

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

/// A multipart part: a field, or a file of `application/octet-stream` when `filename` is given.
fn part(body: &mut Vec<u8>, name: &str, filename: Option<&str>, data: &[u8]) {
    let head = match filename {
        None => format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
        Some(filename) => format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ),
    };
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(data);
    body.extend_from_slice(b"\r\n");
}

/// Bytes that look like a compressed file: no CRLF runs, every value present.
fn file_data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The realistic multipart bodies of the decode-only table.
fn uploads() -> Vec<(&'static str, Bytes)> {
    let finish = |mut body: Vec<u8>| {
        body.extend_from_slice(b"--XyZ--\r\n");
        Bytes::from(body)
    };
    let mut upload = Vec::new();
    part(&mut upload, "title", None, b"Quarterly report");
    part(&mut upload, "author", None, b"A. N. Author");
    part(&mut upload, "tags", None, b"finance,2026,draft");
    part(&mut upload, "doc", Some("report.pdf"), &file_data(10 << 10));
    let mut big = Vec::new();
    part(&mut big, "file", Some("backup.tar.gz"), &file_data(1 << 20));
    let mut fields = Vec::new();
    for i in 0..1000 {
        part(
            &mut fields,
            &format!("f{i}"),
            None,
            format!("value {i}").as_bytes(),
        );
    }
    vec![
        ("3 fields + 10 KiB file", finish(upload)),
        ("one 1 MiB file", finish(big)),
        ("1000 small fields", finish(fields)),
    ]
}

/// The time of one `decode_body` of `body`: the mean of the fastest of five batches.
fn decode_time(body: &Bytes) -> Duration {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
    );
    let limits = BodyLimits {
        bytes: 64 << 20,
        fields: 10_000,
        parts: 1000,
    };
    let decode = || {
        let value = decode_body(&headers, body.clone(), limits).expect("the body decodes");
        std::hint::black_box(value);
    };
    let started = Instant::now();
    let mut warmup = 0u32;
    while started.elapsed() < Duration::from_millis(50) {
        decode();
        warmup += 1;
    }
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..warmup {
            decode();
        }
        best = best.min(started.elapsed() / warmup);
    }
    best
}

fn decode_table() {
    println!("| multipart body | size | decode_body |");
    println!("|---|---|---|");
    let only = std::env::var("BENCH_BODY").unwrap_or_default();
    for (label, body) in uploads().into_iter().filter(|(l, _)| l.contains(&only)) {
        println!(
            "| {label} | {} KB | {:.1?} |",
            body.len() / 1000,
            decode_time(&body)
        );
    }
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
    decode_table();
    if std::env::var_os("BENCH_DECODE_ONLY").is_some() {
        return;
    }
    println!();
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
