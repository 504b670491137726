//! `sql` against real databases: files, concurrent transactions, PostgreSQL's types and
//! isolation levels, connections that die, a database that is down.

use std::sync::Arc;
use std::time::Duration;

use uniflow_core::{Cx, Graph, Packet, Process, Registry, shape};
use uniflow_spec::{Format, parse};
use uniflow_value::{Bytes, Value};

/// A loaded graph of one `sql` node named `db`.
async fn node(driver: &str, source: &str, isolation: Option<&str>) -> Arc<Graph> {
    let mut yaml = format!("- {{kind: sql, name: db, driver: {driver}, source: '{source}'");
    if let Some(level) = isolation {
        yaml.push_str(&format!(", isolation: '{level}'"));
    }
    yaml.push_str("}\n");
    let mut r = Registry::new();
    uniflow_nodes_io::register(&mut r);
    let graph = Graph::compile(parse(&yaml, Format::Yaml, None).unwrap(), &r, &|_, _| None)
        .unwrap_or_else(|d| panic!("{d}"));
    graph.load().await.unwrap();
    graph
}

/// The answer of `db` to `value` in process `proc`.
async fn query(graph: &Arc<Graph>, proc: &Arc<Process>, value: Value) -> Packet {
    let id = graph.find("db").unwrap();
    graph
        .node(id)
        .handle(Cx::new(graph, proc, id), shape::IN, Packet::Data(value))
        .await
}

/// The answer's value, failing the test on an error.
async fn ok(graph: &Arc<Graph>, proc: &Arc<Process>, value: impl Into<Value>) -> Value {
    match query(graph, proc, value.into()).await {
        Packet::Data(Value::Error(e)) => panic!("query failed: {}", e.message()),
        Packet::Data(v) => v,
        other => panic!("{other:?}"),
    }
}

/// The error message of the answer, failing the test when it is not an error.
async fn failed(graph: &Arc<Graph>, proc: &Arc<Process>, value: impl Into<Value>) -> String {
    match query(graph, proc, value.into()).await {
        Packet::Data(Value::Error(e)) => e.message().to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn args(query: &str, args: Vec<Value>) -> Value {
    Value::from(vec![Value::from(query.to_owned()), Value::from(args)])
}

fn yaml(text: &str) -> Value {
    yaml_serde::from_str(text).unwrap()
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("uniflow-sql-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn exit(proc: &Arc<Process>, error: Option<&str>) -> Result<(), String> {
    proc.exit(error.map(uniflow_value::ErrorValue::new))
        .wait()
        .await
        .map_err(|e| e.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_keeps_committed_rows_and_bytes_across_loads() {
    let dir = TempDir::new();
    let path = dir.0.join("app.db");
    let source = path.display().to_string();
    let graph = node("sqlite3", &source, None).await;
    let p = Process::new();
    ok(
        &graph,
        &p,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB)",
    )
    .await;
    let blob = Value::Bytes(Bytes::from_static(&[0, 159, 255]));
    ok(
        &graph,
        &p,
        args("INSERT INTO t (data) VALUES (?)", vec![blob.clone()]),
    )
    .await;
    exit(&p, None).await.unwrap();
    graph.unload().await;

    let again = node("sqlite", &format!("file:{source}"), None).await;
    let q = Process::new();
    assert_eq!(
        ok(&again, &q, "SELECT data FROM t").await,
        yaml("[{data: null}]").map_null(blob)
    );
    exit(&q, None).await.unwrap();
    again.unload().await;
}

trait MapNull {
    fn map_null(self, with: Value) -> Value;
}

impl MapNull for Value {
    /// The first row's `data` replaced (YAML has no bytes).
    fn map_null(self, with: Value) -> Value {
        let row = self.as_list().unwrap()[0]
            .as_map()
            .unwrap()
            .insert("data", with);
        Value::from(vec![Value::Map(row)])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_processes_run_in_transactions_of_their_own() {
    let dir = TempDir::new();
    let graph = node("sqlite3", &dir.0.join("app.db").display().to_string(), None).await;
    let setup = Process::new();
    ok(&graph, &setup, "CREATE TABLE t (id INTEGER)").await;
    exit(&setup, None).await.unwrap();

    let (a, b) = (Process::new(), Process::new());
    ok(&graph, &a, "INSERT INTO t VALUES (1)").await;
    assert_eq!(ok(&graph, &a, "SELECT id FROM t").await, yaml("[{id: 1}]"));
    // Another process does not see the row before the first one's exit commits it.
    assert_eq!(ok(&graph, &b, "SELECT id FROM t").await, yaml("[]"));
    exit(&b, None).await.unwrap();
    exit(&a, None).await.unwrap();
    let c = Process::new();
    assert_eq!(ok(&graph, &c, "SELECT id FROM t").await, yaml("[{id: 1}]"));
    exit(&c, None).await.unwrap();
    graph.unload().await;
}

#[tokio::test]
async fn a_database_that_is_down_fails_queries_not_the_load_and_hides_the_password() {
    // Nothing listens on port 1: the load succeeds, each query says where it could not go.
    let graph = node("postgres", "postgres://app:s3cret@127.0.0.1:1/app", None).await;
    let p = Process::new();
    let message = failed(&graph, &p, "SELECT 1").await;
    assert!(
        message.contains("cannot reach the database `postgres://app:***@127.0.0.1:1/app`"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    exit(&p, None).await.unwrap();
    graph.unload().await;
}

/// A graph on a fresh PostgreSQL database, or `None` (skipped) without a server.
async fn postgres(isolation: Option<&str>) -> Option<(Arc<Graph>, String)> {
    let url = uniflow_store::testing::fresh_database().await?;
    Some((node("postgres", &url, isolation).await, url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_in_and_out_typed() {
    let Some((graph, _)) = postgres(None).await else {
        return;
    };
    let p = Process::new();
    ok(
        &graph,
        &p,
        "CREATE TABLE t (id SERIAL PRIMARY KEY, title TEXT, done BOOL, score FLOAT8, price NUMERIC(8,2), \
         at TIMESTAMPTZ, day DATE, doc JSONB, ref UUID, data BYTEA, n INT2)",
    )
    .await;
    let insert = "INSERT INTO t (title, done, score, price, at, day, doc, ref, data, n) \
                  VALUES (:title, :done, :score, :price, :at, :day, :doc, :ref, :data, :n)";
    let row = yaml(
        "{title: write, done: true, score: 1.5, price: '12.50', at: '2024-05-06T07:08:09Z', day: '2024-05-06', \
         doc: {a: [1, x]}, ref: 0190a5c4-4b1e-7d5a-9f2e-3c4d5e6f7a8b, data: null, n: '7'}",
    );
    let row_with_bytes = Value::Map(
        row.as_map()
            .unwrap()
            .insert("data", Bytes::from_static(b"\x00\x01")),
    );
    assert_eq!(
        ok(
            &graph,
            &p,
            Value::from(vec![Value::from(insert), row_with_bytes])
        )
        .await,
        yaml("{rows_affected: 1, last_insert_id: null}")
    );
    // A batch, and positional parameters whose strings bind to the server's types.
    ok(
        &graph,
        &p,
        args(
            "INSERT INTO t (title) VALUES (:title)",
            vec![yaml("{title: b}"), yaml("{title: c}")],
        ),
    )
    .await;
    let got = ok(
        &graph,
        &p,
        args("SELECT * FROM t WHERE id = $1", vec![Value::from("1")]),
    )
    .await;
    let mut want = yaml(
        "[{id: 1, title: write, done: true, score: 1.5, price: '12.50', at: '2024-05-06T07:08:09Z', day: '2024-05-06', \
         doc: {a: [1, x]}, ref: 0190a5c4-4b1e-7d5a-9f2e-3c4d5e6f7a8b, data: null, n: 7}]",
    );
    want = want.map_null(Value::Bytes(Bytes::from_static(b"\x00\x01")));
    assert_eq!(got, want);
    assert_eq!(
        ok(
            &graph,
            &p,
            "SELECT title, done FROM t WHERE id > 1 ORDER BY id"
        )
        .await,
        yaml("[{title: b, done: null}, {title: c, done: null}]")
    );
    // Injection through an argument stays a value; a wrong count and a bad query are errors.
    assert_eq!(
        ok(
            &graph,
            &p,
            args(
                "SELECT count(*) AS n FROM t WHERE title = $1",
                vec![Value::from("' OR '1'='1")]
            )
        )
        .await,
        yaml("[{n: 0}]")
    );
    assert_eq!(
        failed(
            &graph,
            &p,
            args("SELECT $1::int + $2::int", vec![Value::Int(1)])
        )
        .await,
        "the query takes 2 arguments, got 1"
    );
    exit(&p, None).await.unwrap();
    let q = Process::new();
    assert!(
        failed(&graph, &q, "SELEC 1")
            .await
            .contains("syntax error at or near \"SELEC\"")
    );
    // A failed statement aborts a PostgreSQL transaction: the exit rolls it back and says so.
    let error = exit(&q, None).await.unwrap_err();
    assert!(error.contains("rolled back"), "{error}");
    graph.unload().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_transactions_commit_roll_back_and_stay_apart() {
    let Some((graph, _)) = postgres(None).await else {
        return;
    };
    let setup = Process::new();
    ok(&graph, &setup, "CREATE TABLE t (id INT PRIMARY KEY)").await;
    exit(&setup, None).await.unwrap();

    let (a, b) = (Process::new(), Process::new());
    let (one, two) = tokio::join!(
        ok(
            &graph,
            &a,
            args("INSERT INTO t VALUES ($1)", vec![Value::Int(1)])
        ),
        ok(
            &graph,
            &b,
            args("INSERT INTO t VALUES ($1)", vec![Value::Int(2)])
        ),
    );
    assert_eq!(
        (one.clone(), two),
        (one, yaml("{rows_affected: 1, last_insert_id: null}"))
    );
    assert_eq!(ok(&graph, &a, "SELECT id FROM t").await, yaml("[{id: 1}]"));
    assert_eq!(ok(&graph, &b, "SELECT id FROM t").await, yaml("[{id: 2}]"));
    exit(&a, None).await.unwrap();
    exit(&b, Some("request answered 500 Internal Server Error"))
        .await
        .unwrap();
    let c = Process::new();
    assert_eq!(
        ok(&graph, &c, "SELECT id FROM t ORDER BY id").await,
        yaml("[{id: 1}]")
    );
    exit(&c, None).await.unwrap();
    graph.unload().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_isolation_levels_by_number_and_name() {
    for (level, shown) in [
        ("0", "read committed"),
        ("read committed", "read committed"),
        ("4", "repeatable read"),
        ("snapshot", "repeatable read"),
        ("serializable", "serializable"),
    ] {
        let Some((graph, _)) = postgres(Some(level)).await else {
            return;
        };
        let p = Process::new();
        assert_eq!(
            ok(&graph, &p, "SHOW transaction_isolation").await,
            Value::from(vec![Value::Map([("transaction_isolation", shown)].into())]),
            "{level}"
        );
        exit(&p, None).await.unwrap();
        graph.unload().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_that_die_fail_their_query_and_the_pool_recovers() {
    let Some((graph, url)) = postgres(None).await else {
        return;
    };
    let kill = |pid: i64| {
        let url = url.clone();
        async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query("SELECT pg_terminate_backend($1::int)")
                .bind(pid)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    };
    let pid = |v: Value| {
        v.as_list().unwrap()[0]
            .get("pid")
            .and_then(Value::as_i64)
            .unwrap()
    };
    let setup = Process::new();
    ok(&graph, &setup, "CREATE TABLE t (id INT)").await;
    exit(&setup, None).await.unwrap();
    // Mid-request: the process's next query fails, and what it wrote is gone.
    let a = Process::new();
    ok(&graph, &a, "INSERT INTO t VALUES (1)").await;
    let first = pid(ok(&graph, &a, "SELECT pg_backend_pid() AS pid").await);
    kill(first).await;
    let message = failed(&graph, &a, "SELECT 1").await;
    assert!(!message.is_empty());
    let _ = exit(&a, Some("request answered 500 Internal Server Error")).await;
    let check = Process::new();
    assert_eq!(ok(&graph, &check, "SELECT id FROM t").await, yaml("[]"));
    exit(&check, None).await.unwrap();
    // Idle: the pool notices the dead connection and hands out a live one.
    let b = Process::new();
    let second = pid(ok(&graph, &b, "SELECT pg_backend_pid() AS pid").await);
    exit(&b, None).await.unwrap();
    kill(second).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = Process::new();
    let third = pid(ok(&graph, &c, "SELECT pg_backend_pid() AS pid").await);
    assert_ne!(third, second);
    exit(&c, None).await.unwrap();
    graph.unload().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_load_is_reached_once_it_is_up() {
    let Some(url) = uniflow_store::testing::fresh_database().await else {
        return;
    };
    // The node's port forwards to the server only from the moment it listens.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, after) = rest.split_once('@').unwrap();
    let (server, database) = after.split_once('/').unwrap();
    let graph = node(
        "postgres",
        &format!("{scheme}://{user}@127.0.0.1:{port}/{database}"),
        None,
    )
    .await;
    let p = Process::new();
    assert!(
        failed(&graph, &p, "SELECT 1")
            .await
            .contains("cannot reach the database")
    );
    exit(&p, None).await.unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = server.to_owned();
    let forward = tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let server = server.clone();
            tokio::spawn(async move {
                let mut upstream = tokio::net::TcpStream::connect(server).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    let q = Process::new();
    assert_eq!(ok(&graph, &q, "SELECT 1 AS one").await, yaml("[{one: 1}]"));
    exit(&q, None).await.unwrap();
    graph.unload().await;
    forward.abort();
}
