//! The `sqlite://PATH` store: one file that several processes may share.
//!
//! The file is in WAL mode (readers never wait for the writer) with a busy timeout (a writer
//! waits for another process's write instead of failing at once). Every write runs in a
//! `BEGIN IMMEDIATE` transaction, which takes the write lock first, so checking names and
//! writing are one atomic step across processes. SQLite cannot notify another process, so a
//! watcher polls the `uniflow_changes` log; writes made through this `Store` wake its watchers
//! at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, SqliteConnection};
use tokio::sync::watch;
use uniflow_spec::Resource;

use crate::sql::{self, Cursor, Dialect, Found, Page, Row, Stored};
use crate::{Change, Error, Example};

/// How long a write waits for another process's write before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a watcher reads the change log.
const POLL: Duration = Duration::from_millis(25);

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "written",
        include_str!("../migrations/sqlite/0002_written.sql"),
    ),
];

impl Dialect for Sqlite {
    /// SQLite's implicit row id, which an upsert keeps (see the migration).
    const POSITION: &'static str = "rowid";

    fn param(n: usize) -> String {
        format!("?{n}")
    }
}

#[derive(Clone)]
pub(crate) struct SqliteStore {
    pool: SqlitePool,
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    path: PathBuf,
    /// Counts this store's commits, so its watchers read the log at once instead of at their
    /// next poll.
    commits: watch::Sender<u64>,
}

impl SqliteStore {
    pub(crate) async fn open(path: &str) -> Result<SqliteStore, Error> {
        let url = format!("sqlite://{path}");
        let open_error = |message: String| Error::Open {
            store: url.clone(),
            message,
        };
        if path.is_empty() {
            return Err(open_error(
                "no file named: use `sqlite:///absolute/file.db` or `sqlite://relative/file.db`"
                    .to_owned(),
            ));
        }
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(open_error(format!(
                "the directory `{}` does not exist (the file is created, its directory is not)",
                dir.display()
            )));
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL makes NORMAL durable against crashes of the process; only a power loss can
            // lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(BUSY_TIMEOUT * 2)
            .connect_with(options)
            .await
            .map_err(|e| open_error(describe(&path, &e)))?;
        let migrator = sql::migrator(MIGRATIONS);
        // SQLite has no migration lock: a process opening a new file at the same moment may
        // have created the tables first, and then the second run finds them recorded.
        if let Err(first) = migrator.run(&pool).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
            migrator.run(&pool).await.map_err(|e| {
                open_error(format!(
                    "cannot create or migrate the tables in `{}`: {} (first attempt: {first})",
                    path.display(),
                    migrate_message(&path, &e)
                ))
            })?;
        }
        Ok(SqliteStore {
            pool,
            shared: Arc::new(Shared {
                url,
                path,
                commits: watch::Sender::new(0),
            }),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.shared.url
    }

    fn error(&self, e: &sqlx::Error) -> Error {
        Error::Database {
            store: self.shared.url.clone(),
            message: describe(&self.shared.path, e),
        }
    }

    /// A write transaction: `BEGIN IMMEDIATE` takes the file's write lock now (waiting up to
    /// the busy timeout), so nothing read inside it changes before it commits.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, Error> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.error(&e))
    }

    async fn commit(&self, tx: sqlx::Transaction<'static, sqlx::Sqlite>) -> Result<(), Error> {
        tx.commit().await.map_err(|e| self.error(&e))?;
        self.shared.commits.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    pub(crate) async fn apply<R: Resource>(&self, items: Vec<R>) -> Result<Vec<R>, Error> {
        if items.is_empty() {
            return Ok(items);
        }
        let kind = R::KIND.as_str();
        let (ids, namespaces, names) = sql::batch_keys(&items);
        let pairs: Vec<Vec<String>> = namespaces
            .into_iter()
            .zip(names)
            .map(|(ns, name)| vec![ns, name])
            .collect();
        let mut tx = self.begin().await?;
        let found = sqlx::query(
            "SELECT id, namespace, name FROM uniflow_resources WHERE kind = ?1 AND (\
                 id IN (SELECT value FROM json_each(?2)) \
                 OR (namespace, name) IN (\
                     SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') \
                     FROM json_each(?3)))",
        )
        .bind(kind)
        .bind(json_list(ids))
        .bind(json_list(pairs))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.error(&e))?;
        let found = Found::new(found.iter().map(|r| (r.get(0), r.get(1), r.get(2))));
        let (rows, items) = sql::rows(&found, items)?;
        for row in &rows {
            sqlx::query(
                "INSERT INTO uniflow_resources (kind, id, namespace, name, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (kind, id) DO UPDATE SET \
                 namespace = excluded.namespace, name = excluded.name, data = excluded.data",
            )
            .bind(kind)
            .bind(&row.id)
            .bind(&row.namespace)
            .bind(&row.name)
            .bind(&row.data)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.write_error::<R>(&e))?;
        }
        self.log::<R>(&mut tx, &rows).await?;
        self.commit(tx).await?;
        Ok(items)
    }

    fn write_error<R: Resource>(&self, e: &sqlx::Error) -> Error {
        match e.as_database_error() {
            Some(d) if d.is_unique_violation() => Error::Conflict {
                kind: R::KIND,
                store: self.shared.url.clone(),
                message: d.message().to_owned(),
            },
            _ => self.error(e),
        }
    }

    /// Appends one change row per written row, and trims the log to its last
    /// [`sql::KEEP_CHANGES`] rows.
    async fn log<R: Resource>(&self, tx: &mut SqliteConnection, rows: &[Row]) -> Result<(), Error> {
        let mut seq = 0;
        let written = sql::now_us();
        for row in rows {
            seq = sqlx::query(
                "INSERT INTO uniflow_changes (kind, op, id, namespace, name, written_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(R::KIND.as_str())
            .bind(row.op.as_str())
            .bind(&row.id)
            .bind(&row.namespace)
            .bind(&row.name)
            .bind(written)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(&e))?
            .last_insert_rowid();
        }
        Sqlite::trim(tx, seq).await.map_err(|e| self.error(&e))
    }

    pub(crate) async fn load<R: Resource>(&self, examples: &[Example]) -> Result<Vec<R>, Error> {
        // One read transaction, so examples split over several queries see one state.
        let mut tx = self.pool.begin().await.map_err(|e| self.error(&e))?;
        let rows = Sqlite::select::<R>(&mut tx, examples)
            .await
            .map_err(|e| self.error(&e))?;
        tx.commit().await.map_err(|e| self.error(&e))?;
        sql::decode_all(&self.shared.url, &rows)
    }

    pub(crate) async fn delete<R: Resource>(&self, examples: &[Example]) -> Result<Vec<R>, Error> {
        let mut tx = self.begin().await?;
        let rows = Sqlite::select::<R>(&mut tx, examples)
            .await
            .map_err(|e| self.error(&e))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let items = sql::decode_all(&self.shared.url, &rows)?;
        let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
        sqlx::query(
            "DELETE FROM uniflow_resources \
             WHERE kind = ?1 AND id IN (SELECT value FROM json_each(?2))",
        )
        .bind(R::KIND.as_str())
        .bind(json_list(ids))
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(&e))?;
        let rows: Vec<Row> = rows.into_iter().map(Stored::deleted).collect();
        self.log::<R>(&mut tx, &rows).await?;
        self.commit(tx).await?;
        Ok(items)
    }

    pub(crate) async fn watch(&self) -> Result<SqliteWatch, Error> {
        let head = head(&self.pool).await.map_err(|e| self.error(&e))?;
        Ok(SqliteWatch {
            store: self.clone(),
            commits: self.shared.commits.subscribe(),
            cursor: Cursor::new(head),
        })
    }
}

/// The newest `seq` of the log (or the trimmed horizon, for a log trimmed empty).
async fn head(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MAX(COALESCE((SELECT MAX(seq) FROM uniflow_changes), 0), \
                    (SELECT seq FROM uniflow_changes_trimmed))",
    )
    .fetch_one(pool)
    .await
}

/// A SQLite error in words that name the file: locked past the timeout, not a database.
fn describe(path: &Path, e: &sqlx::Error) -> String {
    let file = path.display();
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .map(|c| c & 0xff);
    match code {
        // SQLITE_BUSY, SQLITE_LOCKED
        Some(5 | 6) => format!(
            "`{file}` stayed locked by another writer for {}s: {e}",
            BUSY_TIMEOUT.as_secs()
        ),
        // SQLITE_CORRUPT, SQLITE_NOTADB
        Some(11 | 26) => format!("`{file}` is not a SQLite database, or is corrupted: {e}"),
        // SQLITE_CANTOPEN
        Some(14) => format!("`{file}` cannot be opened: {e}"),
        _ => format!("`{file}`: {e}"),
    }
}

fn migrate_message(path: &Path, e: &sqlx::migrate::MigrateError) -> String {
    match e {
        sqlx::migrate::MigrateError::Execute(inner) => describe(path, inner),
        other => other.to_string(),
    }
}

/// JSON text of a list of strings (or of pairs of them), for `json_each`.
fn json_list<T: Into<serde_json::Value>>(items: Vec<T>) -> String {
    serde_json::Value::from(items).to_string()
}

/// A watcher of a SQLite store: reads the change log every [`POLL`], and at once when its
/// store commits.
pub(crate) struct SqliteWatch {
    store: SqliteStore,
    commits: watch::Receiver<u64>,
    cursor: Cursor,
}

impl std::fmt::Debug for SqliteWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWatch")
            .field("store", &self.store.shared.url)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl SqliteWatch {
    pub(crate) async fn next(&mut self) -> Option<Change> {
        loop {
            if let Some(change) = self.cursor.pending.pop_front() {
                return Some(change);
            }
            self.commits.borrow_and_update();
            match self.read().await {
                Ok(found) => {
                    self.cursor.recovered(&self.store.shared.url);
                    if found {
                        continue;
                    }
                }
                Err(e) => {
                    self.cursor.failed(&self.store.shared.url, &e.to_string());
                    tokio::time::sleep(sql::RETRY).await;
                    continue;
                }
            }
            tokio::select! {
                _ = self.commits.changed() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Reads the log past the cursor; whether it found anything.
    async fn read(&mut self) -> Result<bool, Error> {
        let store = &self.store;
        let Some(Page { rows, trimmed }) = Sqlite::changes(&store.pool, self.cursor.last)
            .await
            .map_err(|e| store.error(&e))?
        else {
            return Ok(false);
        };
        if self.cursor.lost(trimmed) {
            let head = head(&store.pool).await.map_err(|e| store.error(&e))?;
            self.cursor.resync(head);
            return Ok(true);
        }
        self.cursor.take(rows);
        Ok(true)
    }
}
