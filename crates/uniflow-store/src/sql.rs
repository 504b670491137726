//! What the SQLite and PostgreSQL stores share: the JSON form of a resource, the index an
//! apply is planned against, examples as SQL, and change-log rows as events.
//!
//! Both keep the same tables (see `migrations/`), prefixed `uniflow_` so that a database shared
//! with other programs stays readable: `uniflow_resources` (the JSON text of `to_value()`, with
//! kind, id, namespace and name in indexed columns: primary key (kind, id), unique (kind,
//! namespace, name)), `uniflow_changes` (one row per changed resource, `seq` increasing in
//! commit order) and `uniflow_changes_trimmed` (the highest `seq` deleted from the log). The
//! migrations are recorded in `uniflow_migrations`, not sqlx's default `_sqlx_migrations`,
//! which another program's migrations may already use.

use std::collections::HashMap;
use std::time::Duration;

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

/// A row of the change log.
pub(crate) struct ChangeRow {
    pub(crate) seq: i64,
    pub(crate) kind: String,
    pub(crate) op: String,
    pub(crate) id: String,
    pub(crate) namespace: String,
    pub(crate) name: Option<String>,
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
