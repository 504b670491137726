//! The `postgres://` store: one database that several machines may share.
//!
//! Writes run in one transaction that first takes a transaction-scoped advisory lock, so
//! writers commit one at a time and the change log's `seq` grows in commit order; the unique
//! constraints back the name check up and a violation is reported as `duplicated key`. The
//! transaction ends with `pg_notify('uniflow_changes', <newest seq>)`, delivered at commit. A
//! watcher listens on that channel with sqlx's `PgListener` (which reconnects) and reads the
//! change log by `seq > last` whenever a notification is newer than what it has read, and
//! after every reconnect, so a notification lost while disconnected loses no change.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, Postgres, Row as _};
use uniflow_spec::Resource;

use crate::sql::{self, Cursor, Dialect, Found, Page, Row, Stored};
use crate::{Change, Error, Example};

/// How long opening the store (or reconnecting a watcher) may wait for the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel writers notify and watchers listen on.
const CHANNEL: &str = "uniflow_changes";

/// The advisory lock writers take: "uniflow" in ASCII.
const WRITE_LOCK: i64 = 0x75_6e_69_66_6c_6f_77;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "written",
        include_str!("../migrations/postgres/0002_written.sql"),
    ),
];

impl Dialect for Postgres {
    const POSITION: &'static str = "pos";

    fn param(n: usize) -> String {
        format!("${n}")
    }
}

#[derive(Clone)]
pub(crate) struct PostgresStore {
    pool: PgPool,
    shared: Arc<Shared>,
}

struct Shared {
    /// The URL without its password.
    url: String,
    options: PgConnectOptions,
    /// The password as written in the URL, scrubbed from every message in case a driver
    /// error ever repeats it.
    password: Option<String>,
}

impl Shared {
    fn scrub(&self, message: String) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => message.replace(p.as_str(), "***"),
            _ => message,
        }
    }

    fn error(&self, e: &sqlx::Error) -> Error {
        Error::Database {
            store: self.url.clone(),
            message: self.scrub(e.to_string()),
        }
    }

    fn write_error<R: Resource>(&self, e: &sqlx::Error) -> Error {
        match e.as_database_error() {
            Some(d) if d.is_unique_violation() => Error::Conflict {
                kind: R::KIND,
                store: self.url.clone(),
                message: self.scrub(d.message().to_owned()),
            },
            _ => self.error(e),
        }
    }
}

/// The password in a URL's user info, as written.
fn password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let userinfo = authority.rsplit_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_owned())
}

impl PostgresStore {
    pub(crate) async fn open(url: &str) -> Result<PostgresStore, Error> {
        let redacted = uniflow_spec::redact_credentials(url);
        let shared = |options| Shared {
            url: redacted.clone(),
            options,
            password: password(url),
        };
        let options = PgConnectOptions::from_str(url).map_err(|e| Error::Open {
            store: redacted.clone(),
            message: shared(PgConnectOptions::new()).scrub(format!("invalid URL: {e}")),
        })?;
        let shared = shared(options);
        let server = format!(
            "{}:{} (database `{}`)",
            shared.options.get_host(),
            shared.options.get_port(),
            shared.options.get_database().unwrap_or("<default>"),
        );
        let open_error = |message: String| Error::Open {
            store: shared.url.clone(),
            message: shared.scrub(message),
        };
        // One connection first, alone: the pool retries a refused connection until its
        // timeout and then says only that it timed out, where this says why.
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&shared.options))
            .await
        {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => {
                return Err(open_error(format!(
                    "cannot connect to PostgreSQL at {server}: {e}"
                )));
            }
            Err(_) => {
                return Err(open_error(format!(
                    "cannot connect to PostgreSQL at {server}: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(shared.options.clone());
        // The migrator takes its own advisory lock: two processes opening a new database at
        // once migrate it once.
        sql::migrator(MIGRATIONS).run(&pool).await.map_err(|e| {
            open_error(format!(
                "cannot create or migrate the tables on {server}: {e}"
            ))
        })?;
        Ok(PostgresStore {
            pool,
            shared: Arc::new(shared),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.shared.url
    }

    /// A write transaction holding the writers' lock.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, Error> {
        let mut tx = self.pool.begin().await.map_err(|e| self.shared.error(&e))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.shared.error(&e))?;
        Ok(tx)
    }

    pub(crate) async fn apply<R: Resource>(&self, items: Vec<R>) -> Result<Vec<R>, Error> {
        if items.is_empty() {
            return Ok(items);
        }
        let kind = R::KIND.as_str();
        let (ids, namespaces, names) = sql::batch_keys(&items);
        let mut tx = self.begin().await?;
        let found = sqlx::query(
            "SELECT id, namespace, name FROM uniflow_resources WHERE kind = $1 AND (\
                 id = ANY($2) \
                 OR (namespace, name) IN (SELECT * FROM UNNEST($3::text[], $4::text[])))",
        )
        .bind(kind)
        .bind(&ids)
        .bind(&namespaces)
        .bind(&names)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.shared.error(&e))?;
        let found = Found::new(found.iter().map(|r| (r.get(0), r.get(1), r.get(2))));
        let (rows, items) = sql::rows(&found, items)?;
        let column = |f: fn(&Row) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
        // One statement for the batch, in batch order so new rows keep it.
        sqlx::query(
            "INSERT INTO uniflow_resources (kind, id, namespace, name, data) \
             SELECT $1, u.id, u.namespace, u.name, u.data \
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[]) \
                  WITH ORDINALITY AS u(id, namespace, name, data, n) \
             ORDER BY u.n \
             ON CONFLICT (kind, id) DO UPDATE SET \
             namespace = EXCLUDED.namespace, name = EXCLUDED.name, data = EXCLUDED.data",
        )
        .bind(kind)
        .bind(column(|r| Some(r.id.clone())))
        .bind(column(|r| Some(r.namespace.clone())))
        .bind(column(|r| r.name.clone()))
        .bind(column(|r| Some(r.data.clone())))
        .execute(&mut *tx)
        .await
        .map_err(|e| self.shared.write_error::<R>(&e))?;
        self.log::<R>(&mut tx, &rows).await?;
        tx.commit()
            .await
            .map_err(|e| self.shared.write_error::<R>(&e))?;
        Ok(items)
    }

    /// Appends one change row per written row in order, trims the log to its last
    /// [`sql::KEEP_CHANGES`] rows, and notifies watchers (at commit) of the newest `seq`.
    async fn log<R: Resource>(&self, tx: &mut PgConnection, rows: &[Row]) -> Result<(), Error> {
        let column = |f: fn(&Row) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
        let seq: i64 = sqlx::query_scalar(
            "WITH written AS (\
                 INSERT INTO uniflow_changes (kind, op, id, namespace, name, written_us) \
                 SELECT $1, u.op, u.id, u.namespace, u.name, $6::bigint \
                 FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[]) \
                      WITH ORDINALITY AS u(op, id, namespace, name, n) \
                 ORDER BY u.n \
                 RETURNING seq) \
             SELECT MAX(seq) FROM written",
        )
        .bind(R::KIND.as_str())
        .bind(column(|r| Some(r.op.as_str().to_owned())))
        .bind(column(|r| Some(r.id.clone())))
        .bind(column(|r| Some(r.namespace.clone())))
        .bind(column(|r| r.name.clone()))
        .bind(sql::now_us())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| self.shared.error(&e))?;
        Postgres::trim(tx, seq)
            .await
            .map_err(|e| self.shared.error(&e))?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(seq.to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.shared.error(&e))?;
        Ok(())
    }

    pub(crate) async fn load<R: Resource>(&self, examples: &[Example]) -> Result<Vec<R>, Error> {
        // One snapshot, so examples split over several queries see one state.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(|e| self.shared.error(&e))?;
        let rows = Postgres::select::<R>(&mut tx, examples)
            .await
            .map_err(|e| self.shared.error(&e))?;
        tx.commit().await.map_err(|e| self.shared.error(&e))?;
        sql::decode_all(&self.shared.url, &rows)
    }

    pub(crate) async fn delete<R: Resource>(&self, examples: &[Example]) -> Result<Vec<R>, Error> {
        let mut tx = self.begin().await?;
        let rows = Postgres::select::<R>(&mut tx, examples)
            .await
            .map_err(|e| self.shared.error(&e))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let items = sql::decode_all(&self.shared.url, &rows)?;
        let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
        sqlx::query("DELETE FROM uniflow_resources WHERE kind = $1 AND id = ANY($2)")
            .bind(R::KIND.as_str())
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.shared.error(&e))?;
        let rows: Vec<Row> = rows.into_iter().map(Stored::deleted).collect();
        self.log::<R>(&mut tx, &rows).await?;
        tx.commit().await.map_err(|e| self.shared.error(&e))?;
        Ok(items)
    }

    pub(crate) async fn watch(&self) -> Result<PostgresWatch, Error> {
        // The listener gets a pool of its own (of one connection, which it keeps and
        // reconnects), so watchers never starve the store's pool.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(self.shared.options.clone());
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(|e| self.shared.error(&e))?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(|e| self.shared.error(&e))?;
        // Listening first, then reading where the log is: a change committed in between is
        // both notified and past the cursor, never lost.
        let head = self.head().await.map_err(|e| self.shared.error(&e))?;
        Ok(PostgresWatch {
            store: self.clone(),
            listener,
            cursor: Cursor::new(head),
            behind: false,
        })
    }

    /// The newest `seq` of the log (or the trimmed horizon, for a log trimmed empty).
    async fn head(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT GREATEST(COALESCE((SELECT MAX(seq) FROM uniflow_changes), 0), \
                             (SELECT seq FROM uniflow_changes_trimmed))",
        )
        .fetch_one(&self.pool)
        .await
    }
}

/// A watcher of a PostgreSQL store.
pub(crate) struct PostgresWatch {
    store: PostgresStore,
    listener: PgListener,
    cursor: Cursor,
    /// The log may hold rows past the cursor: a notification said so, or the listener
    /// reconnected and notifications may have been lost.
    behind: bool,
}

impl std::fmt::Debug for PostgresWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresWatch")
            .field("store", &self.store.shared.url)
            .field("cursor", &self.cursor)
            .field("behind", &self.behind)
            .finish()
    }
}

impl PostgresWatch {
    pub(crate) async fn next(&mut self) -> Option<Change> {
        loop {
            if let Some(change) = self.cursor.pending.pop_front() {
                return Some(change);
            }
            if self.behind {
                match self.read().await {
                    Ok(full) => {
                        self.cursor.recovered(&self.store.shared.url);
                        self.behind = full;
                    }
                    Err(e) => {
                        self.cursor.failed(&self.store.shared.url, &e.to_string());
                        tokio::time::sleep(sql::RETRY).await;
                    }
                }
                continue;
            }
            match self.listener.try_recv().await {
                Ok(Some(notification)) => {
                    let newer = notification
                        .payload()
                        .parse::<i64>()
                        .map_or(true, |seq| seq > self.cursor.last);
                    self.behind |= newer;
                }
                // Reconnected: what was notified in between is lost, the log is not.
                Ok(None) => self.behind = true,
                Err(sqlx::Error::PoolClosed) => return None,
                Err(e) => {
                    let error = self.store.shared.scrub(e.to_string());
                    self.cursor.failed(&self.store.shared.url, &error);
                    self.behind = true;
                    tokio::time::sleep(sql::RETRY).await;
                }
            }
        }
    }

    /// Reads the log past the cursor; whether it read a full page (more may follow).
    async fn read(&mut self) -> Result<bool, Error> {
        let shared = &self.store.shared;
        let Some(Page { rows, trimmed }) = Postgres::changes(&self.store.pool, self.cursor.last)
            .await
            .map_err(|e| shared.error(&e))?
        else {
            return Ok(false);
        };
        if self.cursor.lost(trimmed) {
            let head = self.store.head().await.map_err(|e| shared.error(&e))?;
            self.cursor.resync(head);
            return Ok(false);
        }
        let full = rows.len() as i64 == sql::CHANGES_PER_READ;
        self.cursor.take(rows);
        Ok(full)
    }
}
