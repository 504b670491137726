//! Where resources (specs, secrets, charts) live between loads, and how a runtime hears that
//! they changed.
//!
//! A [`Store`] is opened from a URL: `mem://` keeps everything inside this process,
//! `sqlite://PATH` in a file several processes may share, `postgres://...` in a database
//! several machines may share. Every backend has the same semantics (upstream's, with its
//! MongoDB bugs fixed):
//!
//! - [`Store::apply`] upserts a batch in one transaction: each resource replaces the stored
//!   one with its id, else (no id) the one with its namespace and name, else it is inserted
//!   with a new UUID v7 id. A missing namespace is `default`. Names are unique per kind and
//!   namespace; a batch that would break that, or names one resource twice, is refused whole
//!   (`duplicated key`) and nothing is written. A replacement is the whole resource: no field
//!   of the old one survives.
//! - [`Store::load`] and [`Store::delete`] take [`Example`]s: a resource matches when it
//!   matches any example, and an example matches when each of its non-empty fields is equal.
//! - Every change emits one [`Event`] per resource, in order, after the transaction
//!   committed, to every [`Watch`] of its namespace. A watch that may have missed events
//!   says so with [`Change::Resync`]: its owner then reloads everything.
//!
//! How each backend watches: `mem://` through a broadcast channel; SQLite by polling a
//! `uniflow_changes` log table (every 25 ms, and at once for applies made through the same
//! `Store`); PostgreSQL by `LISTEN`/`NOTIFY`, catching up from the same log after a reconnect.

mod error;
mod memory;
mod plan;
mod postgres;
mod sql;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;
use std::sync::Arc;

pub use error::Error;
pub use uniflow_spec::{Resource, ResourceKind};

/// A resource store: memory, SQLite or PostgreSQL. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Memory(Arc<memory::MemoryStore>),
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

impl Store {
    /// Opens the store a URL names: `mem://` (also `memory://` and the empty URL),
    /// `sqlite://PATH` (`sqlite:///abs/file.db` is absolute, `sqlite://rel/file.db` relative
    /// to the working directory; created when missing) or `postgres://...` /
    /// `postgresql://...`. SQL stores create or migrate their tables.
    ///
    /// # Errors
    /// An unknown scheme; a SQLite file whose directory is missing, that is not a SQLite
    /// database, or that stays locked; a PostgreSQL server that cannot be reached within a few
    /// seconds or refuses the login. The message names the file or host, never the password.
    pub async fn open(url: &str) -> Result<Store, Error> {
        let url = url.trim();
        let backend = if matches!(url, "" | "mem://" | "memory://") {
            Backend::Memory(Arc::new(memory::MemoryStore::new()))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Backend::Sqlite(sqlite::SqliteStore::open(path).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(postgres::PostgresStore::open(url).await?)
        } else {
            return Err(Error::UnsupportedUrl {
                url: uniflow_spec::redact_credentials(url),
            });
        };
        Ok(Store { backend })
    }

    /// The store's URL for logs: a PostgreSQL password is replaced by `***`.
    pub fn url_redacted(&self) -> String {
        match &self.backend {
            Backend::Memory(_) => "mem://".to_owned(),
            Backend::Sqlite(s) => s.url().to_owned(),
            Backend::Postgres(p) => p.url().to_owned(),
        }
    }

    /// Whether other processes can see this store: false for `mem://`, which lives and dies
    /// with this process.
    pub fn is_shared(&self) -> bool {
        !matches!(self.backend, Backend::Memory(_))
    }

    /// The resources of kind `R` that match any of `examples` (all of them for none), in the
    /// order they were first stored.
    ///
    /// # Errors
    /// A database failure, or a stored resource that no longer reads as one.
    pub async fn load<R: Resource>(&self, examples: &[Example]) -> Result<Vec<R>, Error> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.load(examples)),
            Backend::Sqlite(s) => s.load(examples).await,
            Backend::Postgres(p) => p.load(examples).await,
        }
    }

    /// Upserts `items` in one transaction and returns them as stored (ids and namespaces
    /// filled in). Emits a `store` event per new resource and a `swap` event per replaced one.
    ///
    /// # Errors
    /// `duplicated key` (nothing written) when two items share a name in a namespace or are
    /// the same stored resource, or an item would take the name of another stored resource;
    /// an item lacking a required field (a spec's `kind`, a secret's `data`, a chart's
    /// `name`) or that cannot be written as JSON; a database failure (nothing written).
    pub async fn apply<R: Resource>(&self, mut items: Vec<R>) -> Result<Vec<R>, Error> {
        plan::prepare(&mut items)?;
        match &self.backend {
            Backend::Memory(m) => m.apply(items),
            Backend::Sqlite(s) => s.apply(items).await,
            Backend::Postgres(p) => p.apply(items).await,
        }
    }

    /// Deletes every resource of kind `R` that matches any of `examples` (everything of the
    /// kind for none) and returns what was deleted, in stored order, with a `delete` event for
    /// each.
    ///
    /// # Errors
    /// A database failure (nothing deleted), or a matching resource that no longer reads as
    /// one.
    pub async fn delete<R: Resource>(&self, examples: &[Example]) -> Result<Vec<R>, Error> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.delete(examples)),
            Backend::Sqlite(s) => s.delete(examples).await,
            Backend::Postgres(p) => p.delete(examples).await,
        }
    }

    /// Watches every kind in `namespace` (every namespace for `None`), from now on.
    ///
    /// # Errors
    /// A database failure while starting the watch.
    pub async fn watch(&self, namespace: Option<&str>) -> Result<Watch, Error> {
        let inner = match &self.backend {
            Backend::Memory(m) => WatchInner::Memory(m.watch()),
            Backend::Sqlite(s) => WatchInner::Sqlite(s.watch().await?),
            Backend::Postgres(p) => WatchInner::Postgres(p.watch().await?),
        };
        Ok(Watch {
            namespace: namespace.map(str::to_owned),
            inner,
        })
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url_redacted())
            .finish()
    }
}

/// A pattern over id, namespace and name: a resource matches when each non-empty field is
/// equal; an example with no field matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Example {
    /// The id to match.
    pub id: Option<String>,
    /// The namespace to match.
    pub namespace: Option<String>,
    /// The name to match.
    pub name: Option<String>,
}

impl Example {
    /// Matches the resource with this id.
    pub fn by_id(id: impl Into<String>) -> Example {
        Example {
            id: Some(id.into()),
            ..Example::default()
        }
    }

    /// Matches every resource of a namespace.
    pub fn in_namespace(namespace: impl Into<String>) -> Example {
        Example {
            namespace: Some(namespace.into()),
            ..Example::default()
        }
    }

    /// Matches the resource with this name in this namespace.
    pub fn by_name(namespace: impl Into<String>, name: impl Into<String>) -> Example {
        Example {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..Example::default()
        }
    }

    /// The example a resource's own keys make (empty ones left out), as upstream's `apply`
    /// and `delete` use a file's entries.
    pub fn of<R: Resource>(resource: &R) -> Example {
        let some = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
        Example {
            id: some(resource.id()),
            namespace: some(Some(resource.namespace())),
            name: some(resource.name()),
        }
    }

    /// Whether a resource with these keys matches.
    pub fn matches(&self, id: &str, namespace: &str, name: Option<&str>) -> bool {
        self.id().is_none_or(|v| v == id)
            && self.namespace().is_none_or(|v| v == namespace)
            && self.name().is_none_or(|v| name == Some(v))
    }

    /// Whether the example matches everything (it has no non-empty field).
    pub fn matches_all(&self) -> bool {
        self.id().is_none() && self.namespace().is_none() && self.name().is_none()
    }

    fn id(&self) -> Option<&str> {
        self.id.as_deref().filter(|s| !s.is_empty())
    }

    fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|s| !s.is_empty())
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref().filter(|s| !s.is_empty())
    }
}

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A new resource was stored.
    Store,
    /// A stored resource was replaced.
    Swap,
    /// A resource was deleted.
    Delete,
}

impl Op {
    /// `store`, `swap` or `delete`, as upstream names them.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Store => "store",
            Op::Swap => "swap",
            Op::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<Op> {
        [Op::Store, Op::Swap, Op::Delete]
            .into_iter()
            .find(|op| op.as_str() == s)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One resource changed: its kind and keys (its new ones, for a swap). Load it by id to see
/// what it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub op: Op,
    /// The resource's kind.
    pub kind: ResourceKind,
    /// Its id.
    pub id: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: Option<String>,
    /// When the change was written, by the writer's clock (`None` for changes logged by a
    /// version that did not record it). How far behind the store a watcher runs.
    pub written: Option<std::time::SystemTime>,
}

/// What a [`Watch`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// One resource changed.
    Event(Event),
    /// Events may have been lost (the watcher fell behind, or the change log no longer
    /// reaches back far enough): reload everything.
    Resync,
}

/// The changes of a store, in the order they were committed, from the moment the watch began.
#[derive(Debug)]
pub struct Watch {
    namespace: Option<String>,
    inner: WatchInner,
}

#[derive(Debug)]
enum WatchInner {
    Memory(memory::MemoryWatch),
    Sqlite(sqlite::SqliteWatch),
    Postgres(postgres::PostgresWatch),
}

impl Watch {
    /// The next change in the watched namespace. `None` once the store is gone (a `mem://`
    /// store whose every clone was dropped); SQL stores wait for changes forever, retrying
    /// through database failures.
    pub async fn next(&mut self) -> Option<Change> {
        loop {
            let change = match &mut self.inner {
                WatchInner::Memory(w) => w.next().await,
                WatchInner::Sqlite(w) => w.next().await,
                WatchInner::Postgres(w) => w.next().await,
            }?;
            match (&change, &self.namespace) {
                (Change::Event(e), Some(ns)) if e.namespace != *ns => {}
                _ => return Some(change),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_memory_watch_ends_with_its_store() {
        let store = Store::open("mem://").await.unwrap();
        let mut watch = store.watch(None).await.unwrap();
        drop(store);
        assert_eq!(watch.next().await, None);
    }

    #[test]
    fn examples_match_on_their_non_empty_fields() {
        assert!(Example::default().matches("x", "n", None));
        assert!(Example::by_id("x").matches("x", "n", Some("a")));
        assert!(!Example::by_id("x").matches("y", "n", Some("a")));
        assert!(Example::by_name("n", "a").matches("y", "n", Some("a")));
        assert!(!Example::by_name("n", "a").matches("y", "n", None));
        let empty = Example {
            id: Some(String::new()),
            ..Example::in_namespace("n")
        };
        assert!(empty.matches("y", "n", None));
        assert!(!empty.matches_all());
    }
}
