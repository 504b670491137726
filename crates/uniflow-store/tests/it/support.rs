//! Opening a fresh store of each backend, and reading watches with a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Connection as _;
use uniflow_spec::Spec;
use uniflow_store::{Change, Store, Watch};

/// A store of one backend, fresh for one test, and what it takes to open it again (as another
/// process would).
pub(crate) struct Fixture {
    pub(crate) store: Store,
    pub(crate) url: String,
    _dir: Option<TempDir>,
}

impl Fixture {
    /// Another `Store` on the same data: what a second process opens. `None` for `mem://`,
    /// which no one else can see.
    pub(crate) async fn reopen(&self) -> Option<Store> {
        if !self.store.is_shared() {
            return None;
        }
        Some(Store::open(&self.url).await.expect("reopen"))
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

impl Backend {
    /// A fresh store, or `None` when the backend cannot run here (PostgreSQL without
    /// `UNIFLOW_TEST_POSTGRES_URL`).
    pub(crate) async fn open(self) -> Option<Fixture> {
        match self {
            Backend::Memory => Some(Fixture {
                store: Store::open("mem://").await.unwrap(),
                url: "mem://".into(),
                _dir: None,
            }),
            Backend::Sqlite => {
                let dir = TempDir::new();
                let url = format!("sqlite://{}", dir.path().join("store.db").display());
                Some(Fixture {
                    store: Store::open(&url).await.unwrap(),
                    url,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let url = fresh_database().await?;
                Some(Fixture {
                    store: Store::open(&url).await.unwrap(),
                    url,
                    _dir: None,
                })
            }
        }
    }
}

/// The server the PostgreSQL tests run against, or `None` (they pass, saying why) when
/// `UNIFLOW_TEST_POSTGRES_URL` is unset, unless `UNIFLOW_REQUIRE_POSTGRES=1`.
pub(crate) fn postgres_url() -> Option<String> {
    match std::env::var("UNIFLOW_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("UNIFLOW_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "UNIFLOW_REQUIRE_POSTGRES=1 but UNIFLOW_TEST_POSTGRES_URL is unset \
                 (scripts/postgres starts a server and prints it)"
            );
            eprintln!(
                "skipped: UNIFLOW_TEST_POSTGRES_URL is unset, so this PostgreSQL test did not run \
                 (eval \"$(scripts/postgres)\" starts a throwaway server)"
            );
            None
        }
    }
}

/// A new database on the test server, so tests run in parallel without sharing tables,
/// notifications or locks. Left behind: the server is a throwaway one.
pub(crate) async fn fresh_database() -> Option<String> {
    let admin = postgres_url()?;
    let name = format!("uniflow_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to UNIFLOW_TEST_POSTGRES_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    conn.close().await.ok();
    Some(with_database(&admin, &name))
}

/// The URL with its database (path) replaced.
fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let query = tail
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{scheme}://{authority}/{database}{query}")
}

/// A directory removed with everything in it when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("uniflow-store-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The next change, failing the test after five seconds. An event's time of writing is
/// checked (recent) and taken out, so events compare by what changed.
pub(crate) async fn next(watch: &mut Watch) -> Change {
    let mut change = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a change within 5 s")
        .expect("the watch is open");
    if let Change::Event(event) = &mut change {
        let written = event
            .written
            .take()
            .expect("the time the change was written");
        let age = std::time::SystemTime::now()
            .duration_since(written)
            .unwrap_or_default();
        assert!(
            age < Duration::from_secs(60),
            "written {age:?} ago: {event:?}"
        );
    }
    change
}

/// Whether the watch stays quiet for a while.
pub(crate) async fn quiet(watch: &mut Watch) -> bool {
    tokio::time::timeout(Duration::from_millis(200), watch.next())
        .await
        .is_err()
}

pub(crate) fn spec(name: &str, ns: &str) -> Spec {
    Spec {
        kind: "nop".into(),
        name: Some(name.into()),
        namespace: ns.into(),
        ..Spec::default()
    }
}

pub(crate) fn names(specs: &[Spec]) -> Vec<&str> {
    specs.iter().filter_map(|s| s.name.as_deref()).collect()
}

/// Runs each behaviour test once per backend: `memory::NAME`, `sqlite::NAME`,
/// `postgres::NAME`. The body is `async fn NAME(f: &Fixture)`.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let f = $crate::support::Backend::Memory.open().await.unwrap();
                super::$name(&f).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let f = $crate::support::Backend::Sqlite.open().await.unwrap();
                super::$name(&f).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(f) = $crate::support::Backend::Postgres.open().await else { return };
                super::$name(&f).await;
            })*
        }
    };
}
pub(crate) use on_every_backend;
