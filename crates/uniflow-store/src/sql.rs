//! What the SQLite and PostgreSQL stores share: the JSON form of a resource, the index an
//! apply is planned against, examples as SQL, change-log rows as events, and the statements
//! that differ between the two only in placeholders and the resources' position column
//! ([`Dialect`]).
//!
//! Both keep the same tables (see `migrations/`), prefixed `uniflow_` so that a database shared
//! with other programs stays readable: `uniflow_resources` (the JSON text of `to_value()`, with
//! kind, id, namespace and name in indexed columns: primary key (kind, id), unique (kind,
//! namespace, name)), `uniflow_changes` (one row per changed resource, `seq` increasing in
//! commit order) and `uniflow_changes_trimmed` (the highest `seq` deleted from the log). The
//! migrations are recorded in `uniflow_migrations`, not sqlx's default `_sqlx_migrations`,
//! which another program's migrations may already use.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row as _,
    Type,
};

use uniflow_spec::{Resource, ResourceKind};
use uniflow_value::Value;

use crate::plan::{self, Index};
use crate::{Change, Error, Event, Example, Op};

/// How many change rows the log keeps. A watcher further behind than this resyncs.
pub(crate) const KEEP_CHANGES: i64 = 10_000;

/// How many change rows a watcher reads at once.
pub(crate) const CHANGES_PER_READ: i64 = 1_000;

/// How many examples go into one query; more are split over several queries, so no query
/// outgrows the database's limit on bound parameters.
pub(crate) const EXAMPLES_PER_QUERY: usize = 100;

/// How long a watcher waits after a failed read before it tries again.
pub(crate) const RETRY: Duration = Duration::from_millis(250);

/// A resource as its JSON text.
pub(crate) fn encode<R: Resource>(item: &R, position: usize) -> Result<String, Error> {
    serde_json::to_string(&item.to_value()).map_err(|e| Error::Invalid {
        kind: R::KIND,
        label: plan::label(item, position),
        message: e.to_string(),
    })
}

/// A resource back from its JSON text. The problems name fields, never values, so a secret's
/// data stays out of the message.
pub(crate) fn decode<R: Resource>(store: &str, id: &str, data: &str) -> Result<R, Error> {
    let corrupt = |message: String| Error::Corrupt {
        store: store.to_owned(),
        kind: R::KIND,
        id: id.to_owned(),
        message,
    };
    let value: Value = serde_json::from_str(data).map_err(|e| {
        corrupt(format!(
            "invalid JSON at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    R::from_value(&value, id).map_err(|problems| {
        corrupt(
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// The stored resources an apply batch names (by id or by namespace and name), as read from
/// the database: enough of an index to plan the batch.
pub(crate) struct Found {
    ids: Vec<String>,
    by_id: HashMap<String, usize>,
    by_name: HashMap<(String, String), usize>,
}

impl Found {
    pub(crate) fn new(rows: impl IntoIterator<Item = (String, String, Option<String>)>) -> Found {
        let mut found = Found {
            ids: Vec::new(),
            by_id: HashMap::new(),
            by_name: HashMap::new(),
        };
        for (id, namespace, name) in rows {
            let slot = found.ids.len();
            found.by_id.insert(id.clone(), slot);
            if let Some(name) = name {
                found.by_name.insert((namespace, name), slot);
            }
            found.ids.push(id);
        }
        found
    }
}

impl Index for Found {
    type Slot = usize;

    fn by_id(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    fn by_name(&self, namespace: &str, name: &str) -> Option<usize> {
        self.by_name
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }

    fn id_of(&self, slot: usize) -> String {
        self.ids[slot].clone()
    }
}

/// The keys an apply batch looks up: its ids, and its (namespace, name) pairs.
pub(crate) fn batch_keys<R: Resource>(items: &[R]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let ids = items
        .iter()
        .filter_map(|r| plan::id_of(r).map(str::to_owned))
        .collect();
    let (namespaces, names) = items
        .iter()
        .filter_map(|r| Some((r.namespace().to_owned(), r.name()?.to_owned())))
        .unzip();
    (ids, namespaces, names)
}

/// One resource of a planned batch, ready to write.
pub(crate) struct Row {
    pub(crate) op: Op,
    pub(crate) id: String,
    pub(crate) namespace: String,
    pub(crate) name: Option<String>,
    pub(crate) data: String,
}

/// Plans `items` against what the database holds of them, gives new ones an id, and encodes
/// each: the rows to write, and the items as stored.
pub(crate) fn rows<R: Resource>(
    found: &Found,
    mut items: Vec<R>,
) -> Result<(Vec<Row>, Vec<R>), Error> {
    let slots = plan::plan(found, &items)?;
    let mut rows = Vec::with_capacity(items.len());
    for (position, (item, slot)) in items.iter_mut().zip(slots).enumerate() {
        let op = match slot {
            Some(s) => {
                item.set_id(found.id_of(s));
                Op::Swap
            }
            None => {
                if plan::id_of(item).is_none() {
                    item.set_id(plan::new_id());
                }
                Op::Store
            }
        };
        rows.push(Row {
            op,
            id: item.id().unwrap_or_default().to_owned(),
            namespace: item.namespace().to_owned(),
            name: item.name().map(str::to_owned),
            data: encode(item, position)?,
        });
    }
    Ok((rows, items))
}

/// The `WHERE` condition for a chunk of examples (`None`: match everything), with its
/// parameters in order. `param(n)` writes the n-th placeholder (`?n` or `$n`); the kind is
/// parameter 1.
pub(crate) fn condition(
    examples: &[Example],
    param: impl Fn(usize) -> String,
) -> Option<(String, Vec<String>)> {
    if examples.is_empty() || examples.iter().any(Example::matches_all) {
        return None;
    }
    let mut binds = Vec::new();
    let mut any = Vec::with_capacity(examples.len());
    for example in examples {
        let mut all = Vec::with_capacity(3);
        for (column, value) in [
            ("id", example.id()),
            ("namespace", example.namespace()),
            ("name", example.name()),
        ] {
            if let Some(value) = value {
                binds.push(value.to_owned());
                all.push(format!("{column} = {}", param(binds.len() + 1)));
            }
        }
        any.push(format!("({})", all.join(" AND ")));
    }
    Some((any.join(" OR "), binds))
}

/// A stored resource as [`Dialect::select`] reads it.
pub(crate) struct Stored {
    pub(crate) id: String,
    pub(crate) namespace: String,
    pub(crate) name: Option<String>,
    pub(crate) data: String,
}

impl Stored {
    /// The change-log row that records deleting it.
    pub(crate) fn deleted(self) -> Row {
        Row {
            op: Op::Delete,
            id: self.id,
            namespace: self.namespace,
            name: self.name,
            data: String::new(),
        }
    }
}

/// The resources stored rows hold, read back from their JSON text.
pub(crate) fn decode_all<R: Resource>(store: &str, rows: &[Stored]) -> Result<Vec<R>, Error> {
    rows.iter()
        .map(|row| decode(store, &row.id, &row.data))
        .collect()
}

/// What [`Dialect::changes`] read of the change log.
pub(crate) struct Page {
    /// The rows past the cursor, in `seq` order; never empty.
    pub(crate) rows: Vec<ChangeRow>,
    /// The highest `seq` deleted from the log.
    pub(crate) trimmed: i64,
}

/// The statements both SQL backends run, written once over sqlx's traits. A backend gives
/// what differs, its placeholder style and the column that orders resources by insertion;
/// the bounds are what the statements bind, read and run on, which both drivers have.
///
/// The statements return sqlx's errors: each backend words them its own way. Their texts are
/// built from column names and placeholders only, every value bound, which is what their
/// `AssertSqlSafe` asserts.
pub(crate) trait Dialect: Database
where
    for<'c> &'c mut Self::Connection: Executor<'c, Database = Self>,
    Self::Arguments: IntoArguments<Self>,
    for<'q> String: Encode<'q, Self> + Decode<'q, Self> + Type<Self>,
    for<'q> i64: Encode<'q, Self> + Decode<'q, Self> + Type<Self>,
    usize: ColumnIndex<Self::Row>,
{
    /// The column of `uniflow_resources` that grows in insertion order.
    const POSITION: &'static str;

    /// The n-th placeholder, counting from 1: `$n` or `?n`.
    fn param(n: usize) -> String;

    /// The rows of kind `R` matching any example, in insertion order.
    async fn select<R: Resource>(
        conn: &mut Self::Connection,
        examples: &[Example],
    ) -> Result<Vec<Stored>, sqlx::Error> {
        let mut found = BTreeMap::new();
        let chunks: Vec<&[Example]> = if examples.is_empty() {
            vec![&[]]
        } else {
            examples.chunks(EXAMPLES_PER_QUERY).collect()
        };
        for chunk in chunks {
            let condition = condition(chunk, Self::param);
            let mut text = format!(
                "SELECT {}, id, namespace, name, data FROM uniflow_resources WHERE kind = {}",
                Self::POSITION,
                Self::param(1)
            );
            if let Some((condition, _)) = &condition {
                text = format!("{text} AND ({condition})");
            }
            let mut query = sqlx::query(AssertSqlSafe(text)).bind(R::KIND.as_str().to_owned());
            for value in condition.iter().flat_map(|(_, binds)| binds) {
                query = query.bind(value.clone());
            }
            for row in query.fetch_all(&mut *conn).await? {
                let position: i64 = row.get(0);
                found.insert(
                    position,
                    Stored {
                        id: row.get(1),
                        namespace: row.get(2),
                        name: row.get(3),
                        data: row.get(4),
                    },
                );
            }
            if condition.is_none() {
                break;
            }
        }
        Ok(found.into_values().collect())
    }

    /// Trims the change log to the [`KEEP_CHANGES`] rows up to `seq`, the newest, and records
    /// the highest `seq` it deleted.
    async fn trim(conn: &mut Self::Connection, seq: i64) -> Result<(), sqlx::Error> {
        let horizon = seq - KEEP_CHANGES;
        if horizon > 0 {
            let p = Self::param(1);
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM uniflow_changes WHERE seq <= {p}"
            )))
            .bind(horizon)
            .execute(&mut *conn)
            .await?;
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE uniflow_changes_trimmed SET seq = {p} WHERE seq < {p}"
            )))
            .bind(horizon)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Up to [`CHANGES_PER_READ`] rows of the change log past `last`; `None` when there are
    /// none.
    async fn changes(pool: &Pool<Self>, last: i64) -> Result<Option<Page>, sqlx::Error> {
        let text = format!(
            "SELECT c.seq, c.kind, c.op, c.id, c.namespace, c.name, c.written_us, t.seq \
             FROM uniflow_changes c, uniflow_changes_trimmed t \
             WHERE c.seq > {} ORDER BY c.seq LIMIT {}",
            Self::param(1),
            Self::param(2)
        );
        let rows = sqlx::query(AssertSqlSafe(text))
            .bind(last)
            .bind(CHANGES_PER_READ)
            .fetch_all(pool)
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(Page {
            trimmed: first.get(7),
            rows: rows
                .iter()
                .map(|r| ChangeRow {
                    seq: r.get(0),
                    kind: r.get(1),
                    op: r.get(2),
                    id: r.get(3),
                    namespace: r.get(4),
                    name: r.get(5),
                    written_us: r.get(6),
                })
                .collect(),
        }))
    }
}

/// A row of the change log.
pub(crate) struct ChangeRow {
    pub(crate) seq: i64,
    pub(crate) kind: String,
    pub(crate) op: String,
    pub(crate) id: String,
    pub(crate) namespace: String,
    pub(crate) name: Option<String>,
    pub(crate) written_us: Option<i64>,
}

/// Now, in microseconds since the Unix epoch, as the change log keeps it.
pub(crate) fn now_us() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// Where a watcher is in the change log, and what it has read but not yet handed out.
#[derive(Debug)]
pub(crate) struct Cursor {
    pub(crate) last: i64,
    pub(crate) pending: std::collections::VecDeque<Change>,
    /// Since when reading has failed: a watcher retries forever, and says so once.
    failing: Option<std::time::Instant>,
}

impl Cursor {
    pub(crate) fn new(last: i64) -> Cursor {
        Cursor {
            last,
            pending: std::collections::VecDeque::new(),
            failing: None,
        }
    }

    /// A read or the listener failed: logged once per streak of failures.
    pub(crate) fn failed(&mut self, store: &str, error: &str) {
        if self.failing.is_none() {
            self.failing = Some(std::time::Instant::now());
            tracing::warn!(store, error, "cannot follow the change log; retrying");
        }
    }

    /// A read succeeded: ends a streak of failures.
    pub(crate) fn recovered(&mut self, store: &str) {
        if let Some(since) = self.failing.take() {
            tracing::info!(store, after = ?since.elapsed(), "following the change log again");
        }
    }

    /// Whether the log dropped rows this watcher has not read: `trimmed` is the highest `seq`
    /// it dropped.
    pub(crate) fn lost(&self, trimmed: i64) -> bool {
        trimmed > self.last
    }

    /// Events were lost: the watcher reloads everything and goes on from `head`, the newest
    /// `seq` of the log now.
    pub(crate) fn resync(&mut self, head: i64) {
        self.pending.clear();
        self.pending.push_back(Change::Resync);
        self.last = self.last.max(head);
    }

    /// Takes in rows read past `last`, in `seq` order.
    pub(crate) fn take(&mut self, rows: Vec<ChangeRow>) {
        for row in rows {
            self.last = self.last.max(row.seq);
            let (Some(kind), Some(op)) = (ResourceKind::parse(&row.kind), Op::parse(&row.op))
            else {
                // A kind or op a newer version wrote: its watchers know it, this one skips it.
                continue;
            };
            self.pending.push_back(Change::Event(Event {
                op,
                kind,
                id: row.id,
                namespace: row.namespace,
                name: row.name,
                written: row.written_us.and_then(|us| {
                    let us = u64::try_from(us).ok()?;
                    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_micros(us))
                }),
            }));
        }
    }
}

/// The embedded migrations of one backend: `(version, description, sql)`, as the files in
/// `migrations/<backend>/NNNN_description.sql` name them.
pub(crate) fn migrator(
    migrations: &[(i64, &'static str, &'static str)],
) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let mut migrator = Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    );
    // "Dangerous" only when renaming the table of a database migrated before: this one has
    // always been the name.
    migrator.dangerous_set_table_name("uniflow_migrations");
    migrator
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_become_or_of_ands() {
        let (sql, binds) = condition(&[Example::by_id("x"), Example::by_name("n", "a")], |n| {
            format!("${n}")
        })
        .unwrap();
        assert_eq!(sql, "(id = $2) OR (namespace = $3 AND name = $4)");
        assert_eq!(binds, ["x", "n", "a"]);
        assert!(
            condition(&[Example::by_id("x"), Example::default()], |n| format!(
                "?{n}"
            ))
            .is_none()
        );
        assert!(condition(&[], |n| format!("?{n}")).is_none());
    }
}
