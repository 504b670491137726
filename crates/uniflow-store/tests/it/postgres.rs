//! What only the PostgreSQL store has: a server that may be unreachable, and a listener
//! connection that may drop.

use std::time::{Duration, Instant};

use sqlx::Connection as _;
use uniflow_spec::{ResourceKind, Spec};
use uniflow_store::{Change, Error, Event, Op, Store};

use crate::support::{fresh_database, next, quiet, spec};

/// Needs no server: nothing listens on port 1.
#[tokio::test]
async fn an_unreachable_server_is_named_without_the_password() {
    let start = Instant::now();
    let err = Store::open("postgres://alice:hunter2@127.0.0.1:1/app")
        .await
        .unwrap_err();
    let waited = start.elapsed();
    let text = err.to_string();
    assert!(matches!(err, Error::Open { .. }), "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(
        text.contains("postgres://alice:***@127.0.0.1:1/app"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("Connection refused"), "{text}");
    assert!(
        waited < Duration::from_secs(2),
        "a refusal needs no timeout: {waited:?}"
    );
    eprintln!("unreachable server reported after {waited:?}: {text}");
}

/// Needs no server: a socket that accepts connections and never answers, so only the
/// connect timeout (5 s) ends the wait.
#[tokio::test]
async fn a_server_that_does_not_answer_times_out_in_seconds() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let start = Instant::now();
    let err = Store::open(&format!("postgres://bob:pw@127.0.0.1:{port}/app"))
        .await
        .unwrap_err();
    let waited = start.elapsed();
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("no answer within 5s"), "{text}");
    assert!(!text.contains(":pw@"), "{text}");
    assert!(waited < Duration::from_secs(7), "{waited:?}");
    eprintln!("silent server reported after {waited:?}: {text}");
}

#[tokio::test]
async fn urls_are_redacted() {
    let Some(url) = fresh_database().await else {
        return;
    };
    // The test server trusts everyone, so any password gets in; none is shown.
    let with_password = url.replacen("://postgres@", "://postgres:s3cret@", 1);
    let store = Store::open(&with_password).await.unwrap();
    assert!(store.is_shared());
    assert!(store.url_redacted().contains("postgres:***@"), "{store:?}");
    assert!(!format!("{store:?}").contains("s3cret"));
}

fn event(op: Op, s: &Spec) -> Change {
    Change::Event(Event {
        op,
        kind: ResourceKind::Specs,
        id: s.id.clone().unwrap(),
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        written: None,
    })
}

/// The listener's backend, found by its last query (`LISTEN "uniflow_changes"`).
async fn listener_pids(conn: &mut sqlx::PgConnection) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_second_store_hears_changes_within_a_second() {
    let Some(url) = fresh_database().await else {
        return;
    };
    let writer = Store::open(&url).await.unwrap();
    let reader = Store::open(&url).await.unwrap();
    let mut watch = reader.watch(Some("default")).await.unwrap();
    for round in 0..3 {
        // The watcher is listening before the change is made.
        let waiting = tokio::spawn(async move {
            let change = next(&mut watch).await;
            (change, Instant::now(), watch)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        let stored = writer
            .apply(vec![spec(&format!("s{round}"), "default")])
            .await
            .unwrap();
        let (change, at, back) = waiting.await.unwrap();
        watch = back;
        assert_eq!(change, event(Op::Store, &stored[0]));
        let seen = at.duration_since(start);
        eprintln!("postgres: the other store heard the change after {seen:?}");
        assert!(seen < Duration::from_secs(1), "{seen:?}");
    }
}

/// The listener's connection is killed, a change is made while nothing listens, and the
/// watcher still delivers it: it reconnects and reads the change log.
#[tokio::test]
async fn a_change_made_while_the_listener_is_gone_is_caught_up() {
    let Some(url) = fresh_database().await else {
        return;
    };
    let writer = Store::open(&url).await.unwrap();
    let reader = Store::open(&url).await.unwrap();
    let mut watch = reader.watch(None).await.unwrap();
    let first = writer.apply(vec![spec("before", "default")]).await.unwrap();
    assert_eq!(next(&mut watch).await, event(Op::Store, &first[0]));

    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let pids = listener_pids(&mut admin).await;
    assert_eq!(pids.len(), 1, "one listener: {pids:?}");
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pids[0])
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(killed);
    // Nobody listens now: this notification goes nowhere.
    let during = writer.apply(vec![spec("during", "default")]).await.unwrap();
    let mut swapped = spec("before", "default");
    swapped.kind = "snippet".into();
    let swapped = writer.apply(vec![swapped]).await.unwrap();

    let start = Instant::now();
    assert_eq!(next(&mut watch).await, event(Op::Store, &during[0]));
    assert_eq!(next(&mut watch).await, event(Op::Swap, &swapped[0]));
    eprintln!(
        "postgres: caught up {:?} after the reconnect began",
        start.elapsed()
    );
    assert!(quiet(&mut watch).await);
    // And it listens again.
    let pids = listener_pids(&mut admin).await;
    assert_eq!(pids.len(), 1, "listening again: {pids:?}");
    assert_ne!(pids[0], 0);
    let after = writer.apply(vec![spec("after", "default")]).await.unwrap();
    assert_eq!(next(&mut watch).await, event(Op::Store, &after[0]));
}
