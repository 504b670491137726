//! Request bodies a hostile client may send: a body is decoded only when a node reads it (a
//! router that matches no route answers without it), and forms and multipart bodies are
//! decoded within the listener's caps on fields and parts.

use http::header;
use uniflow_value::Value;

use crate::support::{client, start};

/// A listener routing `POST /items` and `POST /a b` to a node that answers `{request: <the payload>}`, so the
/// response (JSON) carries the decoded body.
fn routed(extra: &str) -> String {
    format!(
        "- {{kind: listener, name: l, protocol: http, host: 127.0.0.1, port: 0, {extra} ports: {{out: [{{name: router, port: in}}]}}}}\n\
         - {{kind: router, name: router, routes: [{{method: POST, path: /items, port: 'out[0]'}}, {{method: POST, path: '/a b', port: 'out[0]'}}], ports: {{'out[0]': [{{name: echo, port: in}}]}}}}\n\
         - {{kind: test-wrap, name: echo, key: request}}\n"
    )
}

/// Sends `body` as `content_type` with `method` to `path`; the status and the body answered.
async fn send(
    base: &str,
    method: http::Method,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let reply = client()
        .request(method, format!("{base}{path}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("an answer");
    let status = reply.status().as_u16();
    (status, reply.text().await.unwrap())
}

/// The request body in the JSON answer of the route.
fn body_of(text: &str) -> Value {
    let answer: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    answer
        .pick(&["request", "body"])
        .cloned()
        .unwrap_or_else(|| panic!("no body in {text}"))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn a_request_no_route_takes_is_answered_without_decoding_its_body() {
    let running = start(&routed("")).await;
    let base = running.url();
    // The route decodes its bodies: a good one arrives decoded, a broken one answers 400.
    let (status, text) = send(&base, http::Method::POST, "/items", JSON, "{\"n\": 1}").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(body_of(&text), json("{\"n\": 1}"));
    let (status, _) = send(&base, http::Method::POST, "/items", JSON, "{nope").await;
    assert_eq!(status, 400);
    // Routes match the decoded path, as the router sees it in the payload.
    let (status, text) = send(&base, http::Method::POST, "/a%20b", JSON, "[1]").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(body_of(&text), json("[1]"));
    // No route takes these, so nothing reads their bodies: the router's answer comes, not a
    // 400 for a body that does not decode.
    let (status, text) = send(&base, http::Method::PUT, "/items", JSON, "{nope").await;
    assert_eq!((status, text.as_str()), (405, "Method Not Allowed"));
    let (status, text) = send(&base, http::Method::POST, "/missing", JSON, "{nope").await;
    assert_eq!((status, text.as_str()), (404, "Not Found"));
    let (status, _) = send(&base, http::Method::OPTIONS, "/items", JSON, "{nope").await;
    assert_eq!(status, 204);
    // A form of many fields is not parsed for a 405 either, however many it has.
    let form = (0..200_000).map(|i| format!("k{i}=v")).collect::<Vec<_>>();
    let (status, _) = send(
        &base,
        http::Method::PUT,
        "/items",
        "application/x-www-form-urlencoded",
        form.join("&"),
    )
    .await;
    assert_eq!(status, 405);
    running.stop().await;
}

#[tokio::test]
async fn a_listener_whose_answer_is_the_request_decodes_its_body() {
    // With `out` unlinked the request itself is the answer, and its body is read: the form
    // comes back decoded and encoded again (fields sorted by name), not as it was sent.
    let running =
        start("- {kind: listener, name: l, protocol: http, host: 127.0.0.1, port: 0}\n").await;
    let (status, text) = send(
        &running.url(),
        http::Method::POST,
        "/",
        "application/x-www-form-urlencoded",
        "a=1&b=2&a=3",
    )
    .await;
    assert_eq!((status, text.as_str()), (200, "a=1&a=3&b=2"));
    running.stop().await;
}

fn form(fields: usize) -> String {
    (0..fields)
        .map(|i| format!("k{i}=v{i}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn multipart(parts: usize) -> String {
    let mut body = String::new();
    for i in 0..parts {
        body.push_str(&format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv{i}\r\n"
        ));
    }
    body.push_str("--XyZ--\r\n");
    body
}

/// Posts `body` as `content_type` to `/items`.
async fn post_items(base: &str, content_type: &str, body: String) -> (u16, String) {
    send(base, http::Method::POST, "/items", content_type, body).await
}

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";
const MULTIPART: &str = "multipart/form-data; boundary=XyZ";

#[tokio::test]
async fn forms_and_multipart_bodies_are_capped_as_configured() {
    let running = start(&routed("max_fields: 3, max_parts: 2,")).await;
    let base = running.url();
    let post = |content_type, body| post_items(&base, content_type, body);
    let (status, text) = post(FORM, form(3)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        body_of(&text),
        json(r#"{"k0": ["v0"], "k1": ["v1"], "k2": ["v2"]}"#)
    );
    assert_eq!(post(FORM, form(4)).await, (413, "Payload Too Large".into()));
    // A field repeated counts each time it comes.
    assert_eq!(
        post(FORM, "a=1&a=2&a=3&a=4".into()).await,
        (413, "Payload Too Large".into())
    );
    let (status, text) = post(MULTIPART, multipart(2)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        body_of(&text).get("values"),
        Some(&json(r#"{"f0": ["v0"], "f1": ["v1"]}"#))
    );
    assert_eq!(
        post(MULTIPART, multipart(3)).await,
        (413, "Payload Too Large".into())
    );
    running.stop().await;
}

#[tokio::test]
async fn the_default_caps_are_10000_form_fields_and_1000_multipart_parts() {
    let running = start(&routed("")).await;
    let base = running.url();
    let post = async |content_type, body| post_items(&base, content_type, body).await.0;
    assert_eq!(post(FORM, form(10_000)).await, 200);
    assert_eq!(post(FORM, form(10_001)).await, 413);
    assert_eq!(post(MULTIPART, multipart(1_000)).await, 200);
    assert_eq!(post(MULTIPART, multipart(1_001)).await, 413);
    running.stop().await;
}

#[test]
fn caps_must_be_usable() {
    let text = crate::support::problems(&routed("max_fields: 0, max_parts: -1,"));
    assert!(text.contains("field `max_fields`"), "{text}");
    assert!(text.contains("field `max_parts`"), "{text}");
}
