//! What only the SQLite store has: a file, shared by processes, that may be missing, locked
//! or not a database at all.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use uniflow_spec::Spec;
use uniflow_store::{Error, Store};

use crate::support::{TempDir, names, spec};

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

#[tokio::test]
async fn reopening_the_file_keeps_the_data() {
    let dir = TempDir::new();
    let url = url(&dir.path().join("keep.db"));
    let store = Store::open(&url).await.unwrap();
    assert!(store.is_shared());
    assert_eq!(store.url_redacted(), url);
    let stored = store
        .apply(vec![spec("a", "default"), spec("b", "x")])
        .await
        .unwrap();
    drop(store);
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.load::<Spec>(&[]).await.unwrap(), stored);
    // New ids after a reopen still sort after the old ones.
    store.apply(vec![spec("c", "default")]).await.unwrap();
    assert_eq!(
        names(&store.load::<Spec>(&[]).await.unwrap()),
        ["a", "b", "c"]
    );
}

#[tokio::test]
async fn a_relative_path_is_relative_to_the_working_directory() {
    let dir = TempDir::new();
    let cwd = std::env::current_dir().unwrap();
    let up = "../".repeat(cwd.components().count() - 1);
    let relative = format!("{up}{}", dir.path().join("rel.db").display()).replace("//", "/");
    assert!(!relative.starts_with('/'));
    let store = Store::open(&format!("sqlite://{relative}")).await.unwrap();
    store.apply(vec![spec("a", "default")]).await.unwrap();
    assert!(dir.path().join("rel.db").is_file());
}

#[tokio::test]
async fn a_missing_directory_is_named() {
    let dir = TempDir::new();
    let path = dir.path().join("missing").join("store.db");
    let err = Store::open(&url(&path)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Open { .. }), "{text}");
    assert!(text.contains("missing` does not exist"), "{text}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_named() {
    let dir = TempDir::new();
    let path = dir.path().join("garbage.db");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, garbage).unwrap();
    let start = Instant::now();
    let err = Store::open(&url(&path)).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "`{}` is not a SQLite database, or is corrupted",
            path.display()
        )),
        "{text}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// Another process holds the write lock past the busy timeout (5 s): the apply fails naming
/// the file, and writes nothing.
#[tokio::test]
async fn a_file_locked_past_the_timeout_is_named() {
    let dir = TempDir::new();
    let path = dir.path().join("locked.db");
    let store = Store::open(&url(&path)).await.unwrap();
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let start = Instant::now();
    let err = store.apply(vec![spec("a", "default")]).await.unwrap_err();
    let waited = start.elapsed();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "`{}` stayed locked by another writer",
            path.display()
        )),
        "{text}"
    );
    assert!(waited >= Duration::from_secs(4), "{waited:?}");
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    assert!(store.load::<Spec>(&[]).await.unwrap().is_empty());
    store.apply(vec![spec("a", "default")]).await.unwrap();
}

#[tokio::test]
async fn unsupported_urls_say_what_is() {
    for url in ["mysql://db", "sqlite:rel.db", "file:///x"] {
        let err = Store::open(url).await.unwrap_err();
        assert!(matches!(err, Error::UnsupportedUrl { .. }), "{url}: {err}");
        assert!(err.to_string().contains("sqlite://PATH"), "{err}");
    }
    for url in ["", "mem://", "memory://"] {
        let store = Store::open(url).await.unwrap();
        assert!(!store.is_shared());
        assert_eq!(store.url_redacted(), "mem://");
    }
    let err = Store::open("sqlite://").await.unwrap_err();
    assert!(err.to_string().contains("no file named"), "{err}");
}
