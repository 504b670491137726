//! What tests of other crates share with the store's own (feature `testing`): the PostgreSQL
//! server they run against, and a fresh database on it.

use sqlx::Connection as _;

/// The server the PostgreSQL tests run against, or `None` (they pass, saying why) when
/// `UNIFLOW_TEST_POSTGRES_URL` is unset, unless `UNIFLOW_REQUIRE_POSTGRES=1`.
///
/// # Panics
/// When `UNIFLOW_REQUIRE_POSTGRES=1` and no server is named.
pub fn postgres_url() -> Option<String> {
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
///
/// # Panics
/// When the server cannot be reached or the database cannot be created.
pub async fn fresh_database() -> Option<String> {
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
