//! `gateway` and `websocket` over real sockets: an echo through a gateway whose `out` feeds
//! its own `in`, and `examples/wsproxy.yaml` relaying to such an echo server instead of the
//! public one it names.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use uniflow_core::Graph;
use uniflow_nodes_net::websocket::WebSocketNode;

use crate::support::{Running, client, start};

const ECHO: &str = "- {kind: listener, name: l, protocol: http, host: 127.0.0.1, port: 0, ports: {out: [{name: router, port: in}]}}\n- {kind: router, name: router, routes: [{method: GET, path: /ws, port: 'out[0]'}, {method: GET, path: /ping, port: 'out[1]'}], ports: {'out[0]': [{name: gateway, port: io}], 'out[1]': [{name: pong, port: in}]}}\n- {kind: gateway, name: gateway, protocol: websocket, timeout: 5s, ports: {out: [{name: gateway, port: in}]}}\n- {kind: test-const, name: pong, value: pong}\n";

async fn next(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Message {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message within 5s")
        .expect("the connection is open")
        .expect("a valid message")
}

/// Sends text, JSON text, binary and HTML and expects each back as it went, then closes.
async fn round_trips(url: &str) {
    let (mut ws, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("a websocket");
    assert_eq!(response.status(), 101);
    for message in [
        Message::text("hello"),
        Message::text("{\"a\":[1,2]}"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("héllo wörld"),
    ] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(next(&mut ws).await, message);
    }
    // HTML sniffs as bytes in the flow, but the message keeps its type 1, so it goes back as
    // the text frame it came as.
    ws.send(Message::text("<html><b>x</b></html>"))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Message::text("<html><b>x</b></html>"));
    // Many messages in flight come back in order.
    for i in 0..100 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    for i in 0..100 {
        assert_eq!(next(&mut ws).await, Message::text(format!("m{i}")));
    }
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let closed = next(&mut ws).await;
    assert!(closed.is_close(), "{closed:?}");
}

#[tokio::test]
async fn gateway_echoes_messages() {
    let running = start(ECHO).await;
    let url = format!("ws://{}/ws", running.addrs[0]);
    round_trips(&url).await;
    // Two connections at once each get their own messages.
    let (mut a, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    a.send(Message::text("to a")).await.unwrap();
    b.send(Message::text("to b")).await.unwrap();
    assert_eq!(next(&mut b).await, Message::text("to b"));
    assert_eq!(next(&mut a).await, Message::text("to a"));
    // Plain requests on the same listener are still plain.
    let reply = client()
        .get(format!("{}/ping", running.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.text().await.unwrap(), "pong");
    running.stop().await;
}

/// A gateway inside a block still gets the request's connection: the block reports what its
/// children need of the listener. The block's `out` is wired back to its `in`, the gateway's
/// send port, so it echoes.
#[tokio::test]
async fn a_gateway_inside_a_block_upgrades_and_echoes() {
    let running = start(
        "- {kind: listener, name: l, protocol: http, host: 127.0.0.1, port: 0, ports: {out: [{name: router, port: in}]}}\n\
         - {kind: router, name: router, routes: [{method: GET, path: /ws, port: 'out[0]'}], ports: {'out[0]': [{name: b, port: io}]}}\n\
         - {kind: block, name: b, specs: [{kind: gateway, protocol: websocket, timeout: 5s}], ports: {out: [{name: b, port: in}]}}\n",
    )
    .await;
    round_trips(&format!("ws://{}/ws", running.addrs[0])).await;
    running.stop().await;
}

#[tokio::test]
async fn a_plain_request_to_a_gateway_answers_400() {
    let running = start(ECHO).await;
    let reply = client()
        .get(format!("{}/ws", running.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    assert_eq!(reply.text().await.unwrap(), "Bad Request");
    running.stop().await;
}

#[tokio::test]
async fn unloading_closes_open_connections() {
    let running = start(ECHO).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", running.addrs[0]))
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hi"));
    tokio::time::timeout(Duration::from_secs(10), running.stop())
        .await
        .expect("unload finishes with a connection open");
    let after = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the connection ends");
    assert!(
        matches!(after, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "{after:?}"
    );
}

#[tokio::test]
async fn wsproxy_example_relays_through_the_websocket_client() {
    let echo = start(ECHO).await;
    // Compiled in: cargo rebuilds the test when the example changes, and no path is read at
    // run time (a build cache shared by two checkouts may hold a binary built in the other).
    let example = include_str!("../../../../examples/wsproxy.yaml");
    // The example relays to a public echo server; tests talk to 127.0.0.1 only.
    assert!(example.contains("url: wss://echo.websocket.org/"));
    let yaml = example
        .replace(
            "url: wss://echo.websocket.org/",
            &format!("url: ws://{}/ws", echo.addrs[0]),
        )
        .replace("port: 8000", "host: 127.0.0.1\n  port: 0");
    let proxy = start(&yaml).await;
    round_trips(&format!("ws://{}/ws", proxy.addrs[0])).await;
    proxy.stop().await;
    echo.stop().await;
}

#[tokio::test]
async fn a_websocket_that_cannot_connect_goes_to_error() {
    // A listener on a port whose gateway route is not a WebSocket (a pong) refuses the
    // handshake; the error reaches the client as a 500 from the front listener.
    let target = start(ECHO).await;
    let yaml = format!(
        "- {{kind: listener, name: l, protocol: http, host: 127.0.0.1, port: 0, ports: {{out: [{{name: dial, port: io}}]}}}}\n- {{kind: websocket, name: dial, url: 'ws://{}/ping', timeout: 2s}}\n",
        target.addrs[0]
    );
    let running = start(&yaml).await;
    let reply = client().get(running.url()).send().await.unwrap();
    assert_eq!(reply.status(), 500);
    running.stop().await;
    target.stop().await;
}

/// `examples/wsproxy.yaml` relaying to `upstream` instead of the public echo server it names,
/// with `extra` added to the `websocket` node (`timeout: 1s`, say).
async fn relay(upstream: &str, extra: &str) -> Running {
    let example = include_str!("../../../../examples/wsproxy.yaml");
    let url = "url: wss://echo.websocket.org/";
    assert!(example.contains(url));
    let mut with = format!("url: {upstream}");
    if !extra.is_empty() {
        with.push_str(&format!("\n  {extra}"));
    }
    let yaml = example
        .replace(url, &with)
        .replace("port: 8000", "host: 127.0.0.1\n  port: 0");
    start(&yaml).await
}

/// Unloads the workflow; work left by a refused upgrade must not hold it up.
async fn stop(running: Running) {
    tokio::time::timeout(Duration::from_secs(10), running.stop())
        .await
        .expect("unload finishes within 10s");
}

/// Opens a WebSocket to the relay; the HTTP status it was refused with, and how long that took.
async fn refused(relay: &Running) -> (u16, Duration) {
    let started = Instant::now();
    let attempt = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async(format!("ws://{}/ws", relay.addrs[0])),
    )
    .await
    .expect("an answer within 20s");
    match attempt {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            (response.status().as_u16(), started.elapsed())
        }
        Ok((_, response)) => panic!("upgraded: {}", response.status()),
        Err(e) => panic!("not an HTTP answer: {e}"),
    }
}

#[tokio::test]
async fn a_refused_upstream_fails_the_upgrade_with_502() {
    // A port that was bound and is free again: connecting to it is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let running = relay(&format!("ws://127.0.0.1:{port}/ws"), "").await;
    let (status, took) = refused(&running).await;
    assert_eq!(status, 502);
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The listener serves on: the next attempt is refused the same way.
    assert_eq!(refused(&running).await.0, 502);
    stop(running).await;
}

#[tokio::test]
async fn a_flow_that_answers_a_failure_status_refuses_the_upgrade() {
    // The gateway claims the connection, but the flow's answer is a 403: that is sent, not
    // the handshake.
    let running = start(
        "- {kind: listener, name: l, protocol: http, host: 127.0.0.1, port: 0, ports: {out: [{name: router, port: in}]}}\n\
         - {kind: router, name: router, routes: [{method: GET, path: /ws, port: 'out[0]'}], ports: {'out[0]': [{name: gateway, port: io}, {name: deny, port: in}]}}\n\
         - {kind: gateway, name: gateway, protocol: websocket, ports: {out: [{name: gateway, port: in}]}}\n\
         - {kind: test-const, name: deny, value: {status: 403, body: Forbidden}}\n",
    )
    .await;
    assert_eq!(refused(&running).await.0, 403);
    stop(running).await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_the_handshake_fails_the_upgrade_within_the_timeout() {
    // Accepts connections and holds them, but never answers the handshake.
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hole.accept().await {
            held.push(stream);
        }
    });
    let running = relay(&format!("ws://{addr}/ws"), "timeout: 300ms").await;
    let (status, took) = refused(&running).await;
    assert_eq!(status, 502);
    assert!(took < Duration::from_secs(3), "{took:?}");
    running.stop().await;
    held.abort();
}

#[tokio::test]
async fn an_upstream_that_goes_away_closes_the_client_with_an_error_code() {
    // Completes the handshake, reads one message, then drops the connection without a close
    // frame.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = upstream.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let first = ws.next().await;
        drop(ws);
        first
    });
    let running = relay(&format!("ws://{addr}/ws"), "").await;
    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws", running.addrs[0]))
            .await
            .expect("a websocket");
    assert_eq!(response.status(), 101);
    ws.send(Message::text("hi")).await.unwrap();
    let got = server.await.unwrap();
    assert!(
        matches!(got, Some(Ok(Message::Text(ref t))) if t.as_str() == "hi"),
        "{got:?}"
    );
    let Message::Close(Some(frame)) = next(&mut ws).await else {
        panic!("not a close frame with a code")
    };
    assert_eq!(frame.code, CloseCode::Error, "{frame:?}");
    assert!(!frame.reason.is_empty(), "{frame:?}");
    running.stop().await;
}

#[test]
fn a_websocket_bounds_its_connect_time_by_default() {
    let graph = Graph::compile(
        uniflow_spec::parse(
            "- {kind: websocket, name: a, url: 'ws://127.0.0.1:1/'}\n- {kind: websocket, name: b, url: 'ws://127.0.0.1:1/', timeout: 0}\n",
            uniflow_spec::Format::Yaml,
            None,
        )
        .unwrap(),
        &crate::support::registry(),
        &|_, _| None,
    )
    .unwrap();
    let timeout = |name| {
        graph
            .node(graph.find(name).unwrap())
            .downcast_ref::<WebSocketNode>()
            .unwrap()
            .timeout()
    };
    assert_eq!(timeout("a"), Some(Duration::from_secs(10)));
    assert_eq!(timeout("b"), None, "zero means no limit");
}
