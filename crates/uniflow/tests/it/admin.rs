//! The admin API as users run it: `uniflow start` on `examples/system.yaml`, and on upstream's
//! `system.yaml` (kept as `tests/fixtures/system-upstream.yaml`), over `mem://` and SQLite,
//! driven over HTTP and WebSocket on 127.0.0.1.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value as Json, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::live::{Instance, Place, addr, until_answer};
use crate::support::{Reply, free_port, request, root, send};

/// The token of the secret `admin` the tests give `examples/system.yaml`.
const TOKEN: &str = "t0ken-of.the_test~";

/// A running admin API.
struct Admin {
    port: u16,
    instance: Instance,
    // Dropped last: it removes the directory the instance runs in.
    _place: Place,
}

impl Admin {
    /// `examples/system.yaml`, with the secret `admin` holding [`TOKEN`].
    async fn ours(place: Place) -> Admin {
        let port = free_port();
        let secrets = place.file(
            "admin.yaml",
            &format!("- {{name: admin, data: {{token: {TOKEN}}}}}\n"),
        );
        let system = root().join("examples/system.yaml");
        let instance = place
            .start(
                &[
                    "--from-specs",
                    system.to_str().unwrap(),
                    "--from-secrets",
                    secrets.to_str().unwrap(),
                    "-e",
                    &format!("PORT={port}"),
                ],
                port,
            )
            .await;
        Admin {
            port,
            instance,
            _place: place,
        }
    }

    /// Upstream's `system.yaml`, moved from port 8000 to a free one.
    async fn upstream(place: Place) -> Admin {
        let port = free_port();
        let text = std::fs::read_to_string(
            root().join("crates/uniflow/tests/fixtures/system-upstream.yaml"),
        )
        .unwrap();
        assert_eq!(text.matches("port: 8000").count(), 1);
        let file = place.file(
            "system.yaml",
            &text.replace("port: 8000", &format!("port: {port}")),
        );
        let instance = place
            .start(&["--from-specs", file.to_str().unwrap()], port)
            .await;
        Admin {
            port,
            instance,
            _place: place,
        }
    }

    /// A request with `token` as its bearer token (none without), and a JSON body.
    async fn send(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Reply {
        let mut headers = Vec::new();
        if let Some(token) = token {
            headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
        }
        if body.is_some() {
            headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
        }
        let raw = request(method, path, &headers, body.unwrap_or_default().as_bytes());
        send(addr(self.port), &raw).await
    }

    /// A request with [`TOKEN`] that must answer `status`; its body as JSON (`null` when
    /// empty, a string when it is not JSON).
    async fn expect(&self, method: &str, path: &str, body: Option<&str>, status: u16) -> Json {
        let reply = self.send(Some(TOKEN), method, path, body).await;
        let text = String::from_utf8_lossy(&reply.body);
        assert_eq!(
            reply.status,
            status,
            "{method} {path}: {text}\n{}",
            self.instance.log()
        );
        if text.is_empty() {
            Json::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Json::from(text.into_owned()))
        }
    }

    /// The names `GET path` lists, sorted.
    async fn names(&self, path: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .expect("GET", path, None, 200)
            .await
            .as_array()
            .unwrap_or_else(|| panic!("GET {path} answers a list"))
            .iter()
            .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names
    }

    /// A WebSocket on `path`, with `token` (none without).
    async fn watch(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("ws://127.0.0.1:{}{path}", self.port)
            .into_client_request()
            .unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(ws, _)| ws)
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame, as JSON.
async fn next(ws: &mut Socket) -> Json {
    let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a change within 5s")
        .expect("the socket is open")
        .expect("a valid frame");
    match message {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("not a text frame: {other:?}"),
    }
}

/// The ping flow on `port`, answering `answer`, as a JSON list of specs.
fn ping(port: u16, answer: &str) -> String {
    json!([
        {"kind": "listener", "name": "ping_listener", "protocol": "http", "host": "127.0.0.1",
         "port": port, "ports": {"out": [{"name": "ping_router", "port": "in"}]}},
        {"kind": "router", "name": "ping_router",
         "routes": [{"method": "GET", "path": "/ping", "port": "out[0]"}],
         "ports": {"out[0]": [{"name": "pong", "port": "in"}]}},
        {"kind": "snippet", "name": "pong", "language": "text", "code": answer},
    ])
    .to_string()
}

/// The id of the resource named `name` in a list.
fn id_of(list: &Json, name: &str) -> String {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .and_then(|r| r["id"].as_str())
        .unwrap_or_else(|| panic!("no `{name}` in {list}"))
        .to_owned()
}

/// Waits until nothing accepts connections on `port`.
async fn until_closed(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr(port)).await.is_ok() {
        assert!(Instant::now() < deadline, "port {port} still listens");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// examples/system.yaml

/// Create, read with filters, merge patch and delete, with the error paths of each.
async fn ours_manages_specs(admin: &Admin) {
    let own = admin.names("/v1/specs").await;
    assert!(own.contains(&"auth".to_owned()), "{own:?}");

    // The flows of its own process: what a POST stores is served at once.
    let port = free_port();
    let stored = admin
        .expect("POST", "/v1/specs", Some(&ping(port, "pong")), 201)
        .await;
    let answered = Instant::now();
    let took = until_answer(port, "/ping", "pong").await;
    assert!(
        took < Duration::from_millis(200),
        "/ping served {took:?} after the POST answered"
    );
    assert!(answered.elapsed() < Duration::from_secs(1));
    let list = stored.as_array().unwrap();
    assert_eq!(list.len(), 3);
    for spec in list {
        assert_eq!(spec["namespace"], "default", "{spec}");
        assert_eq!(spec["id"].as_str().unwrap().len(), 36, "{spec}");
    }
    let (pong, router) = (id_of(&stored, "pong"), id_of(&stored, "ping_router"));
    let after_post = admin.names("/v1/specs").await;
    assert_eq!(after_post.len(), own.len() + 3);

    // Refused: a name taken (409), an unknown kind or a bad field (400), a body that is not
    // JSON (400); none of them stores anything.
    let taken = admin
        .expect("POST", "/v1/specs", Some(&ping(port, "again")), 409)
        .await;
    assert!(
        taken["error"]
            .as_str()
            .unwrap()
            .starts_with("duplicated key: a spec named `ping_listener`"),
        "{taken}"
    );
    let unknown = admin
        .expect(
            "POST",
            "/v1/specs",
            Some(r#"[{"kind": "wat", "name": "x"}]"#),
            400,
        )
        .await;
    // Every kind the binary registers is listed, in order.
    let store = uniflow_store::Store::open("mem://").await.unwrap();
    let mut kinds: Vec<String> = uniflow::registry_with_system(&store, "default")
        .kinds()
        .map(str::to_owned)
        .collect();
    kinds.sort();
    assert_eq!(
        unknown["error"].as_str().unwrap().lines().next().unwrap(),
        format!(
            "spec `x` field `kind`: unknown kind `wat` (known kinds: {})",
            kinds.join(", ")
        ),
    );
    admin
        .expect(
            "POST",
            "/v1/specs",
            Some(r#"{"kind": "snippet", "name": "y", "language": "klingon", "code": "x"}"#),
            400,
        )
        .await;
    let malformed = admin
        .send(Some(TOKEN), "POST", "/v1/specs", Some(r#"{"kind": "#))
        .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(admin.names("/v1/specs").await, after_post);

    // Filters: every query parameter given must match.
    assert_eq!(admin.names("/v1/specs?name=pong").await, ["pong"]);
    assert_eq!(
        admin.names("/v1/nodes?name=pong&namespace=default").await,
        ["pong"]
    );
    assert!(
        admin
            .names("/v1/specs?name=pong&namespace=other")
            .await
            .is_empty()
    );
    assert!(
        admin
            .names(&format!("/v1/specs?name=pong&id={router}"))
            .await
            .is_empty()
    );
    assert_eq!(
        admin.names(&format!("/v1/specs?id={router}")).await,
        ["ping_router"]
    );
    let one = admin
        .expect("GET", &format!("/v1/specs/{pong}"), None, 200)
        .await;
    assert_eq!(one["code"], "pong");
    assert_eq!(
        admin
            .expect("GET", &format!("/v1/nodes/{pong}"), None, 200)
            .await,
        one
    );
    assert_eq!(
        admin.expect("GET", "/v1/specs/0000", None, 404).await,
        "Not Found"
    );

    // Merge patches: the fields given change, the others stay.
    let patched = admin
        .expect(
            "PATCH",
            "/v1/specs",
            Some(r#"{"name": "pong", "code": "pong!"}"#),
            200,
        )
        .await;
    assert_eq!(patched[0]["language"], "text");
    until_answer(port, "/ping", "pong!").await;
    let patched = admin
        .expect(
            "PATCH",
            &format!("/v1/specs/{pong}"),
            Some(r#"{"code": "pang"}"#),
            200,
        )
        .await;
    assert_eq!(
        (&patched["id"], &patched["code"]),
        (&json!(pong), &json!("pang"))
    );
    until_answer(port, "/ping", "pang").await;
    assert_eq!(
        admin
            .expect("PATCH", "/v1/specs/0000", Some(r#"{"code": "x"}"#), 404)
            .await,
        "Not Found"
    );
    assert!(
        admin
            .expect(
                "PATCH",
                "/v1/specs",
                Some(r#"{"name": "ghost", "code": "x"}"#),
                200
            )
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A patch that would make the spec invalid stores nothing.
    let invalid = admin
        .expect(
            "PATCH",
            "/v1/specs",
            Some(r#"{"name": "pong", "language": "klingon"}"#),
            400,
        )
        .await;
    assert!(
        invalid["error"]
            .as_str()
            .unwrap()
            .starts_with("spec `pong` field `language`: unknown language `klingon`"),
        "{invalid}"
    );
    admin
        .expect("PATCH", &format!("/v1/specs/{pong}"), Some("[1]"), 400)
        .await;
    let kept = admin
        .expect("GET", &format!("/v1/specs/{pong}"), None, 200)
        .await;
    assert_eq!(
        (&kept["language"], &kept["code"]),
        (&json!("text"), &json!("pang"))
    );
    until_answer(port, "/ping", "pang").await;

    // DELETE deletes exactly what it is given, and needs to be given something.
    for refused in [
        "/v1/specs",
        "/v1/specs?namespace=default",
        "/v1/specs?nmae=pong",
    ] {
        let why = admin.expect("DELETE", refused, None, 400).await;
        assert!(
            why["error"].as_str().unwrap().starts_with("DELETE needs"),
            "{why}"
        );
    }
    admin.expect("DELETE", "/v1/specs", Some("[]"), 400).await;
    assert_eq!(admin.names("/v1/specs").await, after_post);
    let deleted = admin
        .expect("DELETE", "/v1/specs?name=pong", None, 200)
        .await;
    assert_eq!(deleted.as_array().unwrap().len(), 1);
    assert_eq!(deleted[0]["name"], "pong");
    assert_eq!(admin.names("/v1/specs").await.len(), after_post.len() - 1);
    assert_eq!(
        admin
            .expect("DELETE", &format!("/v1/specs/{router}"), None, 204)
            .await,
        Json::Null
    );
    assert_eq!(
        admin
            .expect("DELETE", &format!("/v1/specs/{router}"), None, 404)
            .await,
        "Not Found"
    );
    let deleted = admin
        .expect(
            "DELETE",
            "/v1/nodes",
            Some(r#"[{"name": "ping_listener"}]"#),
            200,
        )
        .await;
    assert_eq!(deleted[0]["name"], "ping_listener");
    assert_eq!(admin.names("/v1/specs").await, own);
    until_closed(port).await;

    // Other namespaces are reached by naming them, and only then.
    let other = r#"{"kind": "snippet", "name": "elsewhere", "namespace": "other", "language": "text", "code": "x"}"#;
    let stored = admin.expect("POST", "/v1/specs", Some(other), 201).await;
    assert_eq!(stored[0]["namespace"], "other");
    assert_eq!(admin.names("/v1/specs").await, own);
    assert_eq!(
        admin.names("/v1/specs?namespace=other").await,
        ["elsewhere"]
    );
    admin
        .expect(
            "DELETE",
            "/v1/specs?namespace=other&name=elsewhere",
            None,
            200,
        )
        .await;
    assert!(admin.names("/v1/specs?namespace=other").await.is_empty());
}

/// Secrets and charts: the same routes over their own opcodes.
async fn ours_manages_secrets_and_charts(admin: &Admin) {
    let stored = admin
        .expect(
            "POST",
            "/v1/secrets",
            Some(r#"{"name": "db", "data": {"password": "hunter2"}}"#),
            201,
        )
        .await;
    let db = id_of(&stored, "db");
    assert_eq!(admin.names("/v1/secrets").await, ["admin", "db"]);
    admin
        .expect(
            "POST",
            "/v1/secrets",
            Some(r#"{"name": "db", "data": 1}"#),
            409,
        )
        .await;
    admin
        .expect("POST", "/v1/secrets", Some(r#"{"name": "nodata"}"#), 400)
        .await;
    let patched = admin
        .expect(
            "PATCH",
            &format!("/v1/secrets/{db}"),
            Some(r#"{"data": {"user": "me"}}"#),
            200,
        )
        .await;
    assert_eq!(
        patched["data"],
        json!({"password": "hunter2", "user": "me"})
    );
    admin
        .expect("DELETE", &format!("/v1/secrets/{db}"), None, 204)
        .await;
    assert_eq!(admin.names("/v1/secrets").await, ["admin"]);

    let chart = r#"{"name": "greeter", "specs": [{"kind": "snippet", "name": "inner", "language": "text", "code": "hi"}], "ports": {"in": [{"name": "inner", "port": "in"}], "out": [{"name": "inner", "port": "out"}]}}"#;
    let stored = admin.expect("POST", "/v1/charts", Some(chart), 201).await;
    let greeter = id_of(&stored, "greeter");
    assert_eq!(admin.names("/v1/charts").await, ["greeter"]);
    assert_eq!(
        admin
            .expect("GET", &format!("/v1/charts/{greeter}"), None, 200)
            .await["name"],
        "greeter"
    );
    admin
        .expect("DELETE", "/v1/charts", Some(r#"{"name": "greeter"}"#), 200)
        .await;
    assert!(admin.names("/v1/charts").await.is_empty());
}

/// Without the token nothing is read or changed; the token changes with its secret.
async fn ours_requires_the_token(admin: &Admin) {
    let own = admin.names("/v1/specs").await;
    for token in [None, Some("wrong"), Some("t0ken-of.the_test")] {
        for (method, path, body) in [
            ("GET", "/v1/specs", None),
            ("POST", "/v1/specs", Some(ping(free_port(), "pong"))),
            (
                "PATCH",
                "/v1/specs",
                Some(r#"{"name": "auth", "when": "true"}"#.to_owned()),
            ),
            (
                "DELETE",
                "/v1/specs",
                Some(r#"{"name": "router"}"#.to_owned()),
            ),
        ] {
            let reply = admin.send(token, method, path, body.as_deref()).await;
            assert_eq!(reply.status, 401, "{method} {path} with {token:?}");
            assert_eq!(reply.header("WWW-Authenticate"), Some("Bearer"));
            assert_eq!(reply.body, b"{\"error\":\"Unauthorized\"}\n");
        }
    }
    assert!(matches!(
        admin.watch("/v1/specs", None).await,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 401
    ));
    assert_eq!(admin.names("/v1/specs").await, own);
    let auth = admin.expect("GET", "/v1/specs?name=auth", None, 200).await;
    assert!(
        auth[0]["when"].as_str().unwrap().contains("bearer "),
        "{auth}"
    );

    // A new token takes over once the reload that the changed secret starts is done.
    admin
        .expect(
            "PATCH",
            "/v1/secrets",
            Some(r#"{"name": "admin", "data": {"token": "rotated"}}"#),
            200,
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin
        .send(Some("rotated"), "GET", "/v1/specs", None)
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "{}", admin.instance.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        admin
            .send(Some(TOKEN), "GET", "/v1/specs", None)
            .await
            .status,
        401
    );
}

/// `GET /v1/<kind>` with an upgrade streams that kind's changes.
async fn ours_streams_changes(admin: &Admin) {
    let mut specs = admin.watch("/v1/specs", Some(TOKEN)).await.unwrap();
    let mut nodes = admin.watch("/v1/nodes", Some(TOKEN)).await.unwrap();
    let mut secrets = admin.watch("/v1/secrets", Some(TOKEN)).await.unwrap();
    let spec = r#"{"kind": "snippet", "name": "watched", "language": "text", "code": "x"}"#;
    let stored = admin.expect("POST", "/v1/specs", Some(spec), 201).await;
    let id = id_of(&stored, "watched");
    let want = json!({"op": "store", "id": id, "namespace": "default", "name": "watched"});
    assert_eq!(next(&mut specs).await, want);
    assert_eq!(next(&mut nodes).await, want);
    admin
        .expect(
            "POST",
            "/v1/secrets",
            Some(r#"{"name": "s", "data": 1}"#),
            201,
        )
        .await;
    assert_eq!(next(&mut secrets).await["op"], "store");
    admin
        .expect(
            "PATCH",
            &format!("/v1/specs/{id}"),
            Some(r#"{"code": "y"}"#),
            200,
        )
        .await;
    assert_eq!(next(&mut specs).await["op"], "swap");
    admin
        .expect("DELETE", &format!("/v1/specs/{id}"), None, 204)
        .await;
    assert_eq!(
        next(&mut specs).await,
        json!({"op": "delete", "id": id, "namespace": "default", "name": "watched"})
    );
    // The secret's change went to the secrets socket only: the specs one saw the three above.
    drop(nodes);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), specs.next())
            .await
            .is_err(),
        "a change too many"
    );
}

#[tokio::test]
async fn ours_manages_specs_on_mem() {
    ours_manages_specs(&Admin::ours(Place::mem("admin-specs")).await).await;
}

#[tokio::test]
async fn ours_manages_specs_on_sqlite() {
    ours_manages_specs(&Admin::ours(Place::sqlite("admin-specs")).await).await;
}

#[tokio::test]
async fn ours_manages_secrets_and_charts_on_mem() {
    ours_manages_secrets_and_charts(&Admin::ours(Place::mem("admin-others")).await).await;
}

#[tokio::test]
async fn ours_manages_secrets_and_charts_on_sqlite() {
    ours_manages_secrets_and_charts(&Admin::ours(Place::sqlite("admin-others")).await).await;
}

#[tokio::test]
async fn ours_requires_the_token_on_mem() {
    ours_requires_the_token(&Admin::ours(Place::mem("admin-token")).await).await;
}

#[tokio::test]
async fn ours_requires_the_token_on_sqlite() {
    ours_requires_the_token(&Admin::ours(Place::sqlite("admin-token")).await).await;
}

#[tokio::test]
async fn ours_streams_changes_on_mem() {
    ours_streams_changes(&Admin::ours(Place::mem("admin-stream")).await).await;
}

#[tokio::test]
async fn ours_streams_changes_on_sqlite() {
    ours_streams_changes(&Admin::ours(Place::sqlite("admin-stream")).await).await;
}

// ---------------------------------------------------------------------------------------
// upstream's system.yaml

async fn upstream_runs_unchanged(admin: &Admin) {
    let own = admin.names("/v1/nodes").await;
    assert!(own.contains(&"catch".to_owned()), "{own:?}");

    let port = free_port();
    let stored = admin
        .expect("POST", "/v1/nodes", Some(&ping(port, "pong")), 201)
        .await;
    let took = until_answer(port, "/ping", "pong").await;
    assert!(
        took < Duration::from_millis(200),
        "/ping served {took:?} after the POST"
    );
    for spec in stored.as_array().unwrap() {
        assert_eq!(spec["namespace"], "default", "{spec}");
        assert!(spec["id"].is_string(), "{spec}");
    }
    // GET lists the runtime's namespace, and only it.
    admin.expect(
        "POST",
        "/v1/nodes",
        Some(r#"{"kind": "snippet", "name": "elsewhere", "namespace": "other", "language": "text", "code": "x"}"#),
        201,
    ).await;
    let listed = admin.names("/v1/nodes").await;
    assert_eq!(listed.len(), own.len() + 3, "{listed:?}");
    assert!(!listed.contains(&"elsewhere".to_owned()));

    admin
        .expect(
            "PATCH",
            "/v1/nodes",
            Some(r#"{"name": "pong", "code": "bye"}"#),
            200,
        )
        .await;
    until_answer(port, "/ping", "bye").await;
    // Its DELETE sends `null`, which deletes nothing (upstream's deleted every namespace).
    assert_eq!(
        admin.expect("DELETE", "/v1/nodes", None, 204).await,
        Json::Null
    );
    assert_eq!(admin.names("/v1/nodes").await, listed);
    until_answer(port, "/ping", "bye").await;

    // Its `catch` answers 400 for an invalid resource and 500 for anything else, a name
    // already taken included.
    let invalid = admin
        .expect(
            "POST",
            "/v1/nodes",
            Some(r#"{"kind": "wat", "name": "x"}"#),
            400,
        )
        .await;
    assert!(
        invalid["error"]
            .as_str()
            .unwrap()
            .starts_with("spec `x` field `kind`"),
        "{invalid}"
    );
    assert_eq!(
        admin
            .expect("POST", "/v1/nodes", Some(&ping(port, "pong")), 500)
            .await,
        json!({"error": "Internal Server Error"})
    );

    let secret = admin
        .expect(
            "POST",
            "/v1/secrets",
            Some(r#"{"name": "db", "data": "x"}"#),
            201,
        )
        .await;
    assert_eq!(admin.names("/v1/secrets").await, ["db"]);
    admin
        .expect(
            "PATCH",
            "/v1/secrets",
            Some(r#"{"name": "db", "data": "y"}"#),
            200,
        )
        .await;
    admin.expect("DELETE", "/v1/secrets", None, 204).await;
    assert_eq!(
        admin.expect("GET", "/v1/secrets", None, 200).await[0]["data"],
        "y"
    );
    assert_eq!(id_of(&secret, "db").len(), 36);
    let chart = r#"{"name": "greeter", "specs": [{"kind": "snippet", "name": "inner", "language": "text", "code": "hi"}], "ports": {"in": [{"name": "inner", "port": "in"}], "out": [{"name": "inner", "port": "out"}]}}"#;
    admin.expect("POST", "/v1/charts", Some(chart), 201).await;
    assert_eq!(admin.names("/v1/charts").await, ["greeter"]);
}

#[tokio::test]
async fn upstream_system_yaml_runs_unchanged_on_mem() {
    upstream_runs_unchanged(&Admin::upstream(Place::mem("admin-upstream")).await).await;
}

#[tokio::test]
async fn upstream_system_yaml_runs_unchanged_on_sqlite() {
    upstream_runs_unchanged(&Admin::upstream(Place::sqlite("admin-upstream")).await).await;
}
