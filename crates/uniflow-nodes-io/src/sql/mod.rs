//! `sql`: runs a query in the process's transaction on a SQLite or PostgreSQL database.
//!
//! The payload is a query, or `[query, args]` with `args` a list (for `?` or `$N`
//! placeholders), a map (for `:name` parameters), or a list of lists or maps (a batch: the
//! statement once per item). The first query of a process opens a transaction on a connection
//! of the node's pool; the process's later queries on this node share it, and the process's
//! exit commits it (or rolls it back, when the process exits with an error: a request answered
//! 400 or more). The commit is work the exit hands back ([`Process::on_exit_async`]), so a
//! listener answers only once it is done. The answer is a list of rows as maps, or for a
//! statement without result columns `{rows_affected, last_insert_id}`.
//!
//! What each database does differently (its source, placeholders, isolation, binding and
//! decoding values) lives in `sqlite.rs` and `postgres.rs`, behind `Dialect`.

mod params;
mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use sqlx::pool::PoolOptions;
use sqlx::{
    AssertSqlSafe, Column as _, Connection, Database, Executor, IntoArguments, Pool, Row as _,
    SqlSafeStr as _, Statement as _, Transaction, ValueRef as _,
};
use tokio::task::JoinHandle;
use uniflow_core::{
    CompileCx, Cx, Error, Flow, InPort, LoadCx, Local, Node, NodeSpec, OutPort, Packet, Process,
    shape,
};
use uniflow_spec::Diagnostic;
use uniflow_value::{ErrorValue, Map, Str, Value};

use crate::lock;

/// The fields of a `sql` spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSpec {
    /// `sqlite3` or `sqlite` for SQLite, `postgres` or `pgx` for PostgreSQL.
    pub driver: String,
    /// Where the database is: for SQLite a file path, `file:PATH`, `sqlite://PATH` or
    /// `:memory:`; for PostgreSQL a `postgres://` URL or `key=value` pairs.
    pub source: String,
    /// The transactions' isolation level: Go's `sql.IsolationLevel` number (0 default, 1 read
    /// uncommitted, 2 read committed, 3 write committed, 4 repeatable read, 5 snapshot, 6
    /// serializable, 7 linearizable) or its name.
    #[serde(default)]
    pub isolation: Option<Value>,
}

/// Go's isolation levels, by number.
const LEVELS: [&str; 8] = [
    "default",
    "read uncommitted",
    "read committed",
    "write committed",
    "repeatable read",
    "snapshot",
    "serializable",
    "linearizable",
];

/// Go's isolation level number named by `value`.
fn level(value: &Value) -> Result<usize, String> {
    let found = match value {
        Value::Int(n) => usize::try_from(*n).ok().filter(|n| *n < LEVELS.len()),
        Value::String(name) => match name.trim().parse::<usize>() {
            Ok(n) => Some(n).filter(|n| *n < LEVELS.len()),
            Err(_) => {
                let name = name.to_ascii_lowercase().replace(['_', '-'], " ");
                LEVELS.iter().position(|l| *l == name)
            }
        },
        _ => None,
    };
    found.ok_or_else(|| {
        format!(
            "unknown isolation level {}: expected 0 to 7 or one of {}",
            crate::format::sprint(value),
            LEVELS.join(", ")
        )
    })
}

impl NodeSpec for SqlSpec {
    const KIND: &'static str = "sql";

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let isolation = match self.isolation.as_ref().map(level).transpose() {
            Ok(level) => level.unwrap_or(0),
            Err(message) => {
                problems.push(cx.error("isolation", message));
                0
            }
        };
        let built: Result<Box<dyn Node>, Vec<Diagnostic>> = match self.driver.as_str() {
            "sqlite3" | "sqlite" => SqlNode::<sqlite::Sqlite>::compile(cx, &self.source, isolation),
            "postgres" | "pgx" | "postgresql" => {
                SqlNode::<postgres::Postgres>::compile(cx, &self.source, isolation)
            }
            other => Err(vec![cx.error(
                "driver",
                format!(
                    "unknown driver `{other}`: expected sqlite3 (or sqlite), postgres (or pgx)"
                ),
            )]),
        };
        match built {
            Ok(node) if problems.is_empty() => Ok(node),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.extend(more);
                Err(problems)
            }
        }
    }
}

/// What differs between databases.
pub(crate) trait Dialect: Send + Sync + Sized + 'static {
    /// The sqlx database.
    type Db: Database;
    /// What the node keeps of a statement's parameters to bind them.
    type Params: Send + Sync;

    /// The connection options `source` names (never echoed in errors: it may hold a password).
    ///
    /// # Errors
    /// What is wrong with the source.
    fn options(
        source: &str,
    ) -> Result<<<Self::Db as Database>::Connection as Connection>::Options, String>;

    /// The pool's settings for these options.
    fn pool(
        options: &<<Self::Db as Database>::Connection as Connection>::Options,
    ) -> PoolOptions<Self::Db>;

    /// The statement that begins a transaction at Go's isolation level `level`, `None` for the
    /// database's own `BEGIN`.
    ///
    /// # Errors
    /// A level the database does not offer.
    fn begin(level: usize) -> Result<Option<&'static str>, String>;

    /// Writes the `n`th positional placeholder (from 1).
    fn placeholder(n: usize, out: &mut String);

    /// What binding needs of a prepared statement's parameters.
    fn params(statement: &<Self::Db as Database>::Statement) -> Self::Params;

    /// How many arguments the statement takes.
    fn arity(params: &Self::Params) -> usize;

    /// The arguments for `values`, one per parameter.
    ///
    /// # Errors
    /// A value the parameter's type cannot take.
    fn bind(
        params: &Self::Params,
        values: &[&Value],
    ) -> Result<<Self::Db as Database>::Arguments, ErrorValue>;

    /// The value of column `i` of `row`, which is not null.
    ///
    /// # Errors
    /// A value that does not decode.
    fn cell(row: &<Self::Db as Database>::Row, i: usize)
    -> Result<Value, sqlx::error::BoxDynError>;

    /// `(rows affected, last insert id)` of a statement without result columns.
    fn done(result: &<Self::Db as Database>::QueryResult) -> (u64, Option<i64>);

    /// Whether a failed statement aborts the transaction (PostgreSQL's do: its commit then
    /// rolls back without an error).
    const FAILURE_ABORTS: bool;

    /// Whether a transaction that only read may end by being dropped: the driver then rolls it
    /// back without a round trip to wait for (sqlx's SQLite worker queues the rollback ahead
    /// of the connection's next command). Ending a transaction that changed nothing by a
    /// rollback is the same as committing it.
    const DROP_ENDS_READS: bool;
}

/// Why a query failed: refused before it reached the database (its arguments), or failed in
/// the database (which may abort the transaction).
enum Failure {
    Refused(ErrorValue),
    Database(ErrorValue),
}

/// A prepared statement, as the node remembers it.
struct Shape<D: Dialect> {
    /// The SQL sent: named parameters rewritten to positional ones.
    sql: Arc<str>,
    /// For named parameters, their names in placeholder order.
    names: Vec<String>,
    /// Whether it answers rows (it has result columns).
    rows: bool,
    params: D::Params,
}

/// The statements a node remembers, by query text and whether its arguments are named.
type Shapes<D> = HashMap<(Str, bool), Arc<Shape<D>>>;

/// How many statements a node remembers before it forgets them all; queries are mostly
/// constants of the workflow, so a node rarely sees more.
const SHAPES: usize = 512;

/// How long a query waits for a connection from the pool, reaching the database included;
/// after that it fails (a database that is down answers within this time).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long unloading waits for transactions still open to end before it leaves them to close
/// on their own.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The compiled `sql`.
pub(crate) struct SqlNode<D: Dialect> {
    options: <<D::Db as Database>::Connection as Connection>::Options,
    /// The source with its password masked, for messages.
    shown: String,
    begin: Option<&'static str>,
    /// Made at load (a pool starts tasks on the runtime), lazily connected.
    pool: std::sync::OnceLock<Pool<D::Db>>,
    /// The load's connection check, stopped by unload.
    probe: Mutex<Option<JoinHandle<()>>>,
    transactions: Local<Option<Arc<Open<D>>>>,
    shapes: Mutex<Shapes<D>>,
}

/// A process's transaction on one node: begun by its first query, ended by its exit.
struct Open<D: Dialect> {
    state: tokio::sync::Mutex<TxState<D>>,
}

struct TxState<D: Dialect> {
    tx: Option<Transaction<'static, D::Db>>,
    /// A statement other than a `SELECT` ran (or was tried) in it.
    wrote: bool,
    /// A statement failed in a database whose transactions a failure aborts.
    aborted: Option<String>,
}

impl<D: Dialect> SqlNode<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    usize: sqlx::ColumnIndex<<D::Db as Database>::Row>,
{
    fn compile(
        cx: &CompileCx<'_>,
        source: &str,
        level: usize,
    ) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let shown = uniflow_spec::redact_credentials(source);
        let mut problems = Vec::new();
        let options = D::options(source)
            .map_err(|why| {
                problems.push(cx.error("source", format!("invalid source `{shown}`: {why}")))
            })
            .ok();
        let begin = D::begin(level)
            .map_err(|why| problems.push(cx.error("isolation", why)))
            .ok();
        match (options, begin) {
            (Some(options), Some(begin)) if problems.is_empty() => Ok(Box::new(SqlNode::<D> {
                options,
                shown,
                begin,
                pool: std::sync::OnceLock::new(),
                probe: Mutex::new(None),
                transactions: Local::new(),
                shapes: Mutex::new(HashMap::new()),
            })),
            _ => Err(problems),
        }
    }

    /// The transaction of `proc` on this node, made (not begun) on its first query, with the
    /// exit hook that ends it.
    fn open(&self, proc: &Arc<Process>) -> Arc<Open<D>> {
        let (open, fresh) = proc.with_local(&self.transactions, |slot| match slot {
            Some(open) => (Arc::clone(open), false),
            None => {
                let open = Arc::new(Open {
                    state: tokio::sync::Mutex::new(TxState {
                        tx: None,
                        wrote: false,
                        aborted: None,
                    }),
                });
                *slot = Some(Arc::clone(&open));
                (open, true)
            }
        });
        if fresh {
            let ending = Arc::clone(&open);
            proc.on_exit_async(move |error| {
                let failed = error.is_some();
                Box::pin(async move { ending.end(failed).await })
            });
        }
        open
    }

    async fn query(&self, proc: &Arc<Process>, query: Query) -> Result<Value, ErrorValue> {
        let open = self.open(proc);
        let mut state = open.state.lock().await;
        if let Some(why) = &state.aborted {
            return Err(ErrorValue::new(format!(
                "the transaction is aborted by an earlier failed query ({why})"
            )));
        }
        if state.tx.is_none() {
            state.tx = Some(self.begin().await?);
        }
        state.wrote |= !query.reads_only();
        let tx = state.tx.as_mut().expect("begun above");
        match self.run(tx, &query).await {
            Ok(answer) => Ok(answer),
            Err(Failure::Refused(e)) => Err(e),
            Err(Failure::Database(e)) => {
                if D::FAILURE_ABORTS {
                    state.aborted = Some(e.message().to_string());
                }
                Err(e)
            }
        }
    }

    async fn begin(&self) -> Result<Transaction<'static, D::Db>, ErrorValue> {
        let pool = self
            .pool
            .get()
            .ok_or_else(|| ErrorValue::new("the sql node is not loaded"))?;
        let begun = match self.begin {
            None => pool.begin().await,
            Some(statement) => pool.begin_with(statement).await,
        };
        begun.map_err(|e| self.unreachable(&e))
    }

    /// An error that reaching the database raised, with where it was (its password masked).
    fn unreachable(&self, e: &sqlx::Error) -> ErrorValue {
        match e {
            sqlx::Error::Database(db) => ErrorValue::new(db.message().to_owned()),
            other => ErrorValue::new(format!(
                "cannot reach the database `{}`: {other}",
                self.shown
            )),
        }
    }

    /// Runs `query` (each of its argument sets) in `tx`.
    async fn run(
        &self,
        tx: &mut Transaction<'static, D::Db>,
        query: &Query,
    ) -> Result<Value, Failure> {
        let shape = self.shape(tx, query).await.map_err(Failure::Database)?;
        let mut rows = Vec::new();
        let (mut affected, mut last_id) = (0u64, None);
        for set in query.sets() {
            let values = set.values(&shape.names).map_err(Failure::Refused)?;
            let arity = D::arity(&shape.params);
            if values.len() != arity {
                return Err(Failure::Refused(ErrorValue::new(format!(
                    "the query takes {arity} argument{}, got {}",
                    if arity == 1 { "" } else { "s" },
                    values.len()
                ))));
            }
            let arguments = D::bind(&shape.params, &values).map_err(Failure::Refused)?;
            let statement = sqlx::query_with(AssertSqlSafe(Arc::clone(&shape.sql)), arguments);
            if shape.rows {
                let found = statement
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(|e| Failure::Database(self.unreachable(&e)))?;
                for row in &found {
                    rows.push(row_map::<D>(row).map_err(Failure::Refused)?);
                }
            } else {
                let result = statement
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| Failure::Database(self.unreachable(&e)))?;
                let (n, id) = D::done(&result);
                affected += n;
                last_id = id.or(last_id);
            }
        }
        if shape.rows {
            return Ok(Value::from(rows));
        }
        Ok(Value::Map(Map::from([
            ("last_insert_id", last_id.map_or(Value::Null, Value::Int)),
            ("rows_affected", Value::from(affected)),
        ])))
    }

    /// The statement `query` runs, prepared on `tx`'s connection the first time the node sees
    /// it (to learn its parameters and whether it answers rows), remembered after.
    async fn shape(
        &self,
        tx: &mut Transaction<'static, D::Db>,
        query: &Query,
    ) -> Result<Arc<Shape<D>>, ErrorValue> {
        let key = (query.text.clone(), query.named);
        if let Some(shape) = lock(&self.shapes).get(&key) {
            return Ok(Arc::clone(shape));
        }
        let (sql, names) = if query.named {
            params::named(&query.text, D::placeholder)
        } else {
            (query.text.to_string(), Vec::new())
        };
        let sql: Arc<str> = sql.into();
        let prepared = (&mut **tx)
            .prepare(AssertSqlSafe(Arc::clone(&sql)).into_sql_str())
            .await
            .map_err(|e| self.unreachable(&e))?;
        let shape = Arc::new(Shape::<D> {
            sql,
            names,
            rows: !prepared.columns().is_empty(),
            params: D::params(&prepared),
        });
        let mut shapes = lock(&self.shapes);
        if shapes.len() >= SHAPES {
            shapes.clear();
        }
        shapes.insert(key, Arc::clone(&shape));
        Ok(shape)
    }
}

impl<D: Dialect> Open<D> {
    /// Commits the transaction, or rolls it back when the process `failed` (or a statement
    /// aborted it).
    async fn end(&self, failed: bool) -> Result<(), ErrorValue> {
        let mut state = self.state.lock().await;
        let Some(tx) = state.tx.take() else {
            return Ok(());
        };
        if failed {
            return tx
                .rollback()
                .await
                .map_err(|e| ErrorValue::new(format!("rolling back: {}", message(&e))));
        }
        if D::DROP_ENDS_READS && !state.wrote {
            drop(tx);
            return Ok(());
        }
        if let Some(why) = state.aborted.take() {
            let _ = tx.rollback().await;
            return Err(ErrorValue::new(format!(
                "the transaction was rolled back: a query in it failed ({why})"
            )));
        }
        tx.commit()
            .await
            .map_err(|e| ErrorValue::new(format!("committing: {}", message(&e))))
    }
}

/// A row as a map, column name to value.
fn row_map<D: Dialect>(row: &<D::Db as Database>::Row) -> Result<Value, ErrorValue>
where
    usize: sqlx::ColumnIndex<<D::Db as Database>::Row>,
{
    let mut entries = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let null = row
            .try_get_raw(i)
            .map_err(|e| ErrorValue::new(e.to_string()))?
            .is_null();
        let value = if null {
            Value::Null
        } else {
            D::cell(row, i)
                .map_err(|e| ErrorValue::new(format!("column `{}`: {e}", column.name())))?
        };
        entries.push((Value::from(column.name().to_owned()), value));
    }
    Ok(Value::Map(entries.into_iter().collect::<Map>()))
}

/// The database's own message for a database error, sqlx's text for the others.
fn message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

impl<D: Dialect> Node for SqlNode<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    usize: sqlx::ColumnIndex<<D::Db as Database>::Row>,
{
    fn in_port(&self, name: &str) -> Option<InPort> {
        shape::in_port(name)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        shape::out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(input) = packet else {
            return Flow::Ready(Packet::None);
        };
        let query = match Query::parse(input) {
            Ok(query) => query,
            Err(e) => return cx.send(shape::ERROR, Value::Error(e)),
        };
        let proc = cx.proc();
        Flow::pending(async move {
            match self.query(proc, query).await {
                Ok(answer) => cx.send(shape::OUT, answer).await,
                Err(e) => cx.send(shape::ERROR, Value::Error(e)).await,
            }
        })
    }

    fn load(&self, _cx: LoadCx) -> Result<(), Error> {
        let pool = self
            .pool
            .get_or_init(|| {
                D::pool(&self.options)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(self.options.clone())
            })
            .clone();
        // Connected lazily, so a database that is down does not fail the load: queries fail
        // until it is back, and this says so once, now.
        let shown = self.shown.clone();
        let probe = tokio::spawn(async move {
            if let Err(e) = pool.acquire().await {
                tracing::warn!(source = %shown, error = %e, "sql: cannot reach the database; queries fail until it can be reached");
            }
        });
        *lock(&self.probe) = Some(probe);
        Ok(())
    }

    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let probe = lock(&self.probe).take();
        Box::pin(async move {
            if let Some(probe) = probe {
                probe.abort();
                let _ = probe.await;
            }
            if let Some(pool) = self.pool.get() {
                // No connection is handed out from now on. Idle ones close now; one still in a
                // transaction closes when its process ends, which this waits for a little.
                let _ = tokio::time::timeout(CLOSE_WAIT, pool.close()).await;
            }
        })
    }
}

/// A payload as a query and its argument sets.
struct Query {
    text: Str,
    /// The arguments are maps, bound to `:name` parameters.
    named: bool,
    args: Args,
}

enum Args {
    None,
    One(Value),
    Batch(uniflow_value::List),
}

impl Query {
    fn parse(input: Value) -> Result<Query, ErrorValue> {
        let unsupported = || {
            ErrorValue::new(
                "unsupported payload: expected a query, or [query, args] with args a list, a map, or a list of lists or maps",
            )
        };
        let (text, args) = match input {
            Value::String(text) => (text, None),
            Value::List(items) => match items.as_slice() {
                [Value::String(text)] => (text.clone(), None),
                [Value::String(text), args] => (text.clone(), Some(args.clone())),
                _ => return Err(unsupported()),
            },
            _ => return Err(unsupported()),
        };
        let (named, args) = match args {
            None | Some(Value::Null) => (false, Args::None),
            Some(map @ Value::Map(_)) => (true, Args::One(map)),
            Some(Value::List(list))
                if !list.is_empty() && list.iter().all(|v| matches!(v, Value::Map(_))) =>
            {
                (true, Args::Batch(list))
            }
            Some(Value::List(list))
                if !list.is_empty() && list.iter().all(|v| matches!(v, Value::List(_))) =>
            {
                (false, Args::Batch(list))
            }
            Some(list @ Value::List(_)) => (false, Args::One(list)),
            Some(_) => return Err(unsupported()),
        };
        Ok(Query { text, named, args })
    }

    /// Whether the statement only reads: a `SELECT` (one that writes starts otherwise, with
    /// `INSERT`, `WITH ... INSERT`, and so on).
    fn reads_only(&self) -> bool {
        let text = self.text.trim_start();
        text.get(..6)
            .is_some_and(|word| word.eq_ignore_ascii_case("select"))
    }

    /// Each set of arguments the statement runs with: once without, once per batch item.
    fn sets(&self) -> Vec<ArgSet<'_>> {
        match &self.args {
            Args::None => vec![ArgSet(None)],
            Args::One(v) => vec![ArgSet(Some(v))],
            Args::Batch(items) => items.iter().map(|v| ArgSet(Some(v))).collect(),
        }
    }
}

struct ArgSet<'a>(Option<&'a Value>);

impl<'a> ArgSet<'a> {
    /// The values in placeholder order: a list as it is, a map's by `names`.
    fn values(&self, names: &[String]) -> Result<Vec<&'a Value>, ErrorValue> {
        match self.0 {
            None => Ok(Vec::new()),
            Some(Value::List(list)) => Ok(list.iter().collect()),
            Some(Value::Map(map)) => names
                .iter()
                .map(|name| {
                    map.get(name).ok_or_else(|| {
                        ErrorValue::new(format!("no argument for the parameter :{name}"))
                    })
                })
                .collect(),
            Some(_) => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_levels_by_number_or_name() {
        assert_eq!(level(&Value::Int(6)), Ok(6));
        assert_eq!(level(&Value::from("Repeatable_Read")), Ok(4));
        assert_eq!(level(&Value::from("read committed")), Ok(2));
        assert!(
            level(&Value::Int(8))
                .unwrap_err()
                .contains("unknown isolation level 8")
        );
    }
}
