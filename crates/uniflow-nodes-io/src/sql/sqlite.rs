//! SQLite for the `sql` node: sources, `BEGIN` by isolation level, binding and decoding.

use std::str::FromStr;

use sqlx::error::BoxDynError;
use sqlx::pool::PoolOptions;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteQueryResult, SqliteRow, SqliteStatement,
};
use sqlx::{
    Arguments, Column as _, Decode, Row as _, Statement as _, TypeInfo as _, ValueRef as _,
};
use uniflow_value::{Bytes, ErrorValue, Value};

use super::Dialect;

/// SQLite.
pub(crate) struct Sqlite;

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;
    type Params = usize;

    const FAILURE_ABORTS: bool = false;
    const DROP_ENDS_READS: bool = true;

    fn options(source: &str) -> Result<SqliteConnectOptions, String> {
        let url = match source.trim() {
            "" => return Err("empty".to_owned()),
            ":memory:" => "sqlite::memory:".to_owned(),
            s if s.starts_with("sqlite:") => s.to_owned(),
            // Go's go-sqlite3 takes a file name or a `file:` URI.
            s => format!("sqlite://{}", s.strip_prefix("file:").unwrap_or(s)),
        };
        SqliteConnectOptions::from_str(&url)
            .map(|o| o.create_if_missing(true))
            .map_err(|e| e.to_string())
    }

    fn pool(options: &SqliteConnectOptions) -> PoolOptions<sqlx::Sqlite> {
        // A SQLite connection is a file handle of this process: it cannot go stale as a
        // socket can, so the pool does not ping it before each transaction (a round trip to
        // the connection's worker thread, a third of a one-query request's).
        let pool = PoolOptions::new().test_before_acquire(false);
        // An in-memory database lives as long as a connection to it: one connection, kept.
        let name = options.get_filename().to_string_lossy();
        if name.starts_with("file:sqlx-in-memory") {
            return pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        pool.max_connections(8)
    }

    fn begin(level: usize) -> Result<Option<&'static str>, String> {
        // SQLite's transactions are serializable whatever the level; a serializable or
        // linearizable one takes the write lock at once (`BEGIN IMMEDIATE`), so two that read
        // and then write cannot deadlock on upgrading their locks.
        Ok(match level {
            6 | 7 => Some("BEGIN IMMEDIATE"),
            _ => None,
        })
    }

    fn placeholder(n: usize, out: &mut String) {
        out.push('?');
        out.push_str(&n.to_string());
    }

    fn params(statement: &SqliteStatement) -> usize {
        match statement.parameters() {
            Some(sqlx::Either::Right(n)) => n,
            Some(sqlx::Either::Left(types)) => types.len(),
            None => 0,
        }
    }

    fn arity(params: &usize) -> usize {
        *params
    }

    fn bind(_params: &usize, values: &[&Value]) -> Result<SqliteArguments, ErrorValue> {
        let mut args = SqliteArguments::default();
        for (i, value) in values.iter().enumerate() {
            let added = match value {
                Value::Null => args.add(None::<i64>),
                Value::Bool(b) => args.add(*b),
                Value::Int(n) => args.add(*n),
                Value::Uint(n) => match i64::try_from(*n) {
                    Ok(n) => args.add(n),
                    Err(_) => args.add(*n as f64),
                },
                Value::Float(f) => args.add(*f),
                Value::String(s) => args.add(s.to_string()),
                Value::Bytes(b) => args.add(b.to_vec()),
                Value::List(_) | Value::Map(_) => args.add(json(value)),
                Value::Error(e) => args.add(e.message().to_string()),
            };
            added.map_err(|e| ErrorValue::new(format!("argument {}: {e}", i + 1)))?;
        }
        Ok(args)
    }

    fn cell(row: &SqliteRow, i: usize) -> Result<Value, BoxDynError> {
        let raw = row.try_get_raw(i)?;
        let stored = raw.type_info().name().to_owned();
        match (stored.as_str(), row.column(i).type_info().name()) {
            // The text or numbers of a `DATETIME` column as RFC 3339, when they read as a
            // time; as they are otherwise.
            (_, "DATETIME") => match row.try_get_unchecked::<chrono::DateTime<chrono::Utc>, _>(i) {
                Ok(t) => Ok(Value::from(
                    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                )),
                Err(_) => plain(&stored, raw),
            },
            ("INTEGER", "BOOLEAN") => Ok(Value::Bool(row.try_get_unchecked::<bool, _>(i)?)),
            _ => plain(&stored, raw),
        }
    }

    fn done(result: &SqliteQueryResult) -> (u64, Option<i64>) {
        (result.rows_affected(), Some(result.last_insert_rowid()))
    }
}

/// A value by its storage class alone.
fn plain(
    stored: &str,
    raw: sqlx::sqlite::SqliteValueRef<'_>,
) -> Result<Value, sqlx::error::BoxDynError> {
    Ok(match stored {
        "INTEGER" => Value::Int(<i64 as Decode<sqlx::Sqlite>>::decode(raw)?),
        "REAL" => Value::Float(<f64 as Decode<sqlx::Sqlite>>::decode(raw)?),
        "BLOB" => Value::Bytes(Bytes::from(<Vec<u8> as Decode<sqlx::Sqlite>>::decode(raw)?)),
        _ => Value::from(<String as Decode<sqlx::Sqlite>>::decode(raw)?),
    })
}

/// A list or map as JSON text (SQLite's JSON functions read it).
pub(super) fn json(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
