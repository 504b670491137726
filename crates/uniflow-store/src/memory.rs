//! The `mem://` store: resources inside this process, typed, with hash indexes.
//!
//! Each resource type has a table: its resources in insertion order (a deleted one leaves a
//! hole until holes outnumber resources), with an index by id and by (namespace, name), so an
//! upsert finds its resource without a scan and applying n resources costs O(n). Events go out
//! through a broadcast channel while the write lock is held, so every watcher sees them in
//! commit order.

use std::any::{Any, TypeId};
use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use tokio::sync::broadcast;
use uniflow_spec::Resource;

use crate::plan::{self, Index};
use crate::{Change, Error, Event, Example, Op};

/// How many events a watcher may fall behind before it is told to resync. Upstream's buffer
/// was unbounded; a watcher this far behind reloads instead, which costs less than the events.
const EVENT_BUFFER: usize = 4096;

pub(crate) struct MemoryStore {
    // Writes are rare (apply, admin API) and reads happen at load time, never per request,
    // so one lock over every table is enough.
    tables: RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    events: broadcast::Sender<Event>,
}

/// The resources of one type, in insertion order.
struct Table<R> {
    items: Vec<Option<R>>,
    live: usize,
    ids: HashMap<String, usize>,
    names: HashMap<(String, String), usize>,
}

impl<R> Default for Table<R> {
    fn default() -> Self {
        Table {
            items: Vec::new(),
            live: 0,
            ids: HashMap::new(),
            names: HashMap::new(),
        }
    }
}

impl<R: Resource> Index for Table<R> {
    type Slot = usize;

    fn by_id(&self, id: &str) -> Option<usize> {
        self.ids.get(id).copied()
    }

    fn by_name(&self, namespace: &str, name: &str) -> Option<usize> {
        // Borrowed lookups into a tuple key need an owned key; names are short.
        self.names
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }

    fn id_of(&self, slot: usize) -> String {
        self.items[slot]
            .as_ref()
            .and_then(|r| r.id())
            .unwrap_or_default()
            .to_owned()
    }
}

impl<R: Resource> Table<R> {
    fn name_key(item: &R) -> Option<(String, String)> {
        item.name()
            .map(|name| (item.namespace().to_owned(), name.to_owned()))
    }

    /// The positions of the resources matching any example, in insertion order. Examples with
    /// an id, or a namespace and a name, go through an index; any other example scans.
    fn matching(&self, examples: &[Example]) -> Vec<usize> {
        let live = |i: &usize| self.items[*i].is_some();
        if examples.is_empty() || examples.iter().any(Example::matches_all) {
            return (0..self.items.len()).filter(live).collect();
        }
        let indexed =
            |e: &Example| e.id().is_some() || (e.namespace().is_some() && e.name().is_some());
        if !examples.iter().all(indexed) {
            return (0..self.items.len())
                .filter(|&i| {
                    self.items[i]
                        .as_ref()
                        .is_some_and(|r| examples.iter().any(|e| matches(e, r)))
                })
                .collect();
        }
        let mut found = BTreeSet::new();
        for example in examples {
            let slot = match (example.id(), example.namespace(), example.name()) {
                (Some(id), _, _) => self.by_id(id),
                (None, Some(ns), Some(name)) => self.by_name(ns, name),
                _ => None,
            };
            if let Some(i) = slot
                && self.items[i].as_ref().is_some_and(|r| matches(example, r))
            {
                found.insert(i);
            }
        }
        found.into_iter().collect()
    }

    /// Drops the holes deleted resources left once they outnumber the resources.
    fn compact(&mut self) {
        if self.items.len() <= 2 * self.live + 64 {
            return;
        }
        self.items.retain(Option::is_some);
        self.ids.clear();
        self.names.clear();
        for (i, item) in self.items.iter().enumerate() {
            let item = item.as_ref().expect("holes were just removed");
            if let Some(id) = item.id() {
                self.ids.insert(id.to_owned(), i);
            }
            if let Some(key) = Table::name_key(item) {
                self.names.insert(key, i);
            }
        }
    }
}

fn matches<R: Resource>(example: &Example, r: &R) -> bool {
    example.matches(r.id().unwrap_or_default(), r.namespace(), r.name())
}

fn event<R: Resource>(op: Op, r: &R) -> Event {
    Event {
        op,
        kind: R::KIND,
        id: r.id().unwrap_or_default().to_owned(),
        namespace: r.namespace().to_owned(),
        name: r.name().map(str::to_owned),
        written: Some(std::time::SystemTime::now()),
    }
}

impl MemoryStore {
    pub(crate) fn new() -> MemoryStore {
        MemoryStore {
            tables: RwLock::new(HashMap::new()),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    /// Runs `f` over the table of `R` (an empty one when nothing of `R` was ever stored).
    fn read<R: Resource, T>(&self, f: impl FnOnce(&Table<R>) -> T) -> T {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        match tables.get(&TypeId::of::<R>()) {
            Some(table) => f(table
                .downcast_ref::<Table<R>>()
                .expect("tables are keyed by their type")),
            None => f(&Table::default()),
        }
    }

    fn write<R: Resource, T>(
        &self,
        f: impl FnOnce(&mut Table<R>, &broadcast::Sender<Event>) -> T,
    ) -> T {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let table = tables
            .entry(TypeId::of::<R>())
            .or_insert_with(|| Box::new(Table::<R>::default()))
            .downcast_mut::<Table<R>>()
            .expect("tables are keyed by their type");
        f(table, &self.events)
    }

    pub(crate) fn apply<R: Resource>(&self, items: Vec<R>) -> Result<Vec<R>, Error> {
        self.write(|table: &mut Table<R>, events| {
            let slots = plan::plan(table, &items)?;
            let mut applied = Vec::with_capacity(items.len());
            for (mut item, slot) in items.into_iter().zip(slots) {
                let i = match slot {
                    Some(i) => {
                        let old = table.items[i].take().expect("a slot holds a resource");
                        if let Some(key) = Table::name_key(&old) {
                            table.names.remove(&key);
                        }
                        if let Some(id) = old.id() {
                            item.set_id(id.to_owned());
                        }
                        i
                    }
                    None => {
                        if plan::id_of(&item).is_none() {
                            item.set_id(plan::new_id());
                        }
                        let i = table.items.len();
                        table
                            .ids
                            .insert(item.id().unwrap_or_default().to_owned(), i);
                        table.items.push(None);
                        table.live += 1;
                        i
                    }
                };
                if let Some(key) = Table::name_key(&item) {
                    table.names.insert(key, i);
                }
                table.items[i] = Some(item.clone());
                applied.push((slot.is_some(), item));
            }
            // No watcher, no events to build: `start` applies thousands of specs before
            // anything watches.
            if events.receiver_count() > 0 {
                for (swapped, item) in &applied {
                    let op = if *swapped { Op::Swap } else { Op::Store };
                    let _ = events.send(event(op, item));
                }
            }
            Ok(applied.into_iter().map(|(_, item)| item).collect())
        })
    }

    pub(crate) fn load<R: Resource>(&self, examples: &[Example]) -> Vec<R> {
        self.read(|table: &Table<R>| {
            table
                .matching(examples)
                .into_iter()
                .filter_map(|i| table.items[i].clone())
                .collect()
        })
    }

    pub(crate) fn delete<R: Resource>(&self, examples: &[Example]) -> Vec<R> {
        self.write(|table: &mut Table<R>, events| {
            let mut deleted = Vec::new();
            for i in table.matching(examples) {
                let item = table.items[i]
                    .take()
                    .expect("matching positions hold resources");
                if let Some(id) = item.id() {
                    table.ids.remove(id);
                }
                if let Some(key) = Table::name_key(&item) {
                    table.names.remove(&key);
                }
                table.live -= 1;
                deleted.push(item);
            }
            table.compact();
            if events.receiver_count() > 0 {
                for item in &deleted {
                    let _ = events.send(event(Op::Delete, item));
                }
            }
            deleted
        })
    }

    pub(crate) fn watch(&self) -> MemoryWatch {
        MemoryWatch {
            events: self.events.subscribe(),
        }
    }
}

/// A watcher of a memory store.
#[derive(Debug)]
pub(crate) struct MemoryWatch {
    events: broadcast::Receiver<Event>,
}

impl MemoryWatch {
    pub(crate) async fn next(&mut self) -> Option<Change> {
        match self.events.recv().await {
            Ok(event) => Some(Change::Event(event)),
            // The owner reloads everything now, so the events still buffered are stale:
            // go on from the newest.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                self.events = self.events.resubscribe();
                Some(Change::Resync)
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
