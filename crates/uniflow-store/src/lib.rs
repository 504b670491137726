//! Where specs live between loads.
//!
//! [`MemoryStore`] is the `mem://` database: specs keyed by id, with names unique per
//! namespace. It assigns a UUID v7 to a spec without an id and puts a spec without a namespace
//! in `default`, as upstream's store does. [`MemoryStore::apply`] is the upsert that
//! `start --from-specs` (and later `apply`) uses. Change events for live reload, and the SQLite
//! and PostgreSQL stores, join this crate with the reload work.

use std::collections::HashMap;
use std::sync::RwLock;

use uniflow_spec::Spec;

/// Why the store refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another spec already has this name in this namespace.
    #[error("duplicated key: a spec named `{name}` already exists in namespace `{namespace}`")]
    DuplicateName {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// Two specs of one batch share a name in a namespace.
    #[error(
        "duplicated key: specs #{first} and #{second} are both named `{name}` in namespace `{namespace}`"
    )]
    DuplicateInBatch {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
        /// The first spec's position in the batch.
        first: usize,
        /// The second spec's position in the batch.
        second: usize,
    },
    /// Two specs of one batch are the same stored spec: they share an id, or one names by
    /// id the spec that the other names by name.
    #[error("duplicated key: specs #{first} and #{second} are both the spec with id `{id}`")]
    DuplicateId {
        /// The id.
        id: String,
        /// The first spec's position in the batch.
        first: usize,
        /// The second spec's position in the batch.
        second: usize,
    },
}

/// The in-memory spec store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // Writes are rare (apply, admin API) and reads happen at load time, never per request,
    // so one lock is enough here.
    inner: RwLock<Inner>,
}

/// The specs in insertion order, with an index by id and by (namespace, name), so that an
/// upsert finds its spec without a scan: applying a file of n specs costs O(n).
#[derive(Debug, Default)]
struct Inner {
    specs: Vec<Spec>,
    ids: HashMap<String, usize>,
    names: HashMap<(String, String), usize>,
}

impl Inner {
    /// The stored spec a new spec replaces: the one with its id, or, when it has none, the one
    /// with its namespace and name.
    fn slot(&self, spec: &Spec) -> Option<usize> {
        match (&spec.id, &spec.name) {
            (Some(id), _) => self.ids.get(id.as_str()).copied(),
            (None, Some(name)) => self.names.get(&name_key(spec, name)).copied(),
            (None, None) => None,
        }
    }
}

fn name_key(spec: &Spec, name: &str) -> (String, String) {
    (spec.namespace.clone(), name.to_owned())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Inserts each spec, or replaces the stored one with the same id, or (when the new spec
    /// has no id) the same namespace and name. Missing ids become UUID v7s. Returns the specs
    /// as stored.
    ///
    /// # Errors
    /// When two specs of the batch share a name in a namespace, or are the same stored spec;
    /// when a spec would take the name of another stored spec. Nothing is stored then.
    pub fn apply(&self, specs: Vec<Spec>) -> Result<Vec<Spec>, Error> {
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let slots = plan(inner, &specs)?;
        let mut applied = Vec::with_capacity(specs.len());
        for (mut spec, slot) in specs.into_iter().zip(slots) {
            let i = match slot {
                Some(i) => {
                    let old = &inner.specs[i];
                    if let Some(name) = &old.name {
                        inner.names.remove(&name_key(old, name));
                    }
                    spec.id.clone_from(&old.id);
                    inner.specs[i] = spec.clone();
                    i
                }
                None => {
                    let id = spec
                        .id
                        .get_or_insert_with(|| uuid::Uuid::now_v7().to_string());
                    inner.ids.insert(id.clone(), inner.specs.len());
                    inner.specs.push(spec.clone());
                    inner.specs.len() - 1
                }
            };
            if let Some(name) = &spec.name {
                inner.names.insert(name_key(&spec, name), i);
            }
            applied.push(spec);
        }
        Ok(applied)
    }

    /// The specs of one namespace (all namespaces for `None`), in insertion order.
    pub fn load(&self, namespace: Option<&str>) -> Vec<Spec> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .specs
            .iter()
            .filter(|s| namespace.is_none_or(|ns| s.namespace == ns))
            .cloned()
            .collect()
    }
}

/// Where each spec of `batch` goes (the stored spec it replaces, or `None` for a new one),
/// after checking that the batch can be applied whole.
fn plan(inner: &Inner, batch: &[Spec]) -> Result<Vec<Option<usize>>, Error> {
    let mut names: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.len());
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut replaced: HashMap<usize, usize> = HashMap::new();
    let mut slots = Vec::with_capacity(batch.len());
    for (position, spec) in batch.iter().enumerate() {
        let slot = inner.slot(spec);
        if let Some(name) = &spec.name {
            if let Some(first) = names.insert((&spec.namespace, name), position) {
                return Err(Error::DuplicateInBatch {
                    namespace: spec.namespace.clone(),
                    name: name.clone(),
                    first,
                    second: position,
                });
            }
            // The name may be taken only by the spec this one replaces.
            if let Some(&holder) = inner.names.get(&name_key(spec, name))
                && slot != Some(holder)
            {
                return Err(Error::DuplicateName {
                    namespace: spec.namespace.clone(),
                    name: name.clone(),
                });
            }
        }
        let same = match (slot, &spec.id) {
            (Some(i), _) => replaced.insert(i, position),
            (None, Some(id)) => ids.insert(id, position),
            (None, None) => None,
        };
        if let Some(first) = same {
            let id = slot
                .and_then(|i| inner.specs[i].id.clone())
                .or_else(|| spec.id.clone())
                .unwrap_or_default();
            return Err(Error::DuplicateId {
                id,
                first,
                second: position,
            });
        }
        slots.push(slot);
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, ns: &str) -> Spec {
        Spec {
            kind: "nop".into(),
            name: Some(name.into()),
            namespace: ns.into(),
            ..Spec::default()
        }
    }

    #[test]
    fn apply_assigns_v7_ids_and_upserts_by_name() {
        let store = MemoryStore::new();
        let first = store
            .apply(vec![spec("a", "default"), spec("a", "other")])
            .unwrap();
        let id = first[0].id.clone().unwrap();
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        let mut changed = spec("a", "default");
        changed.kind = "snippet".into();
        let second = store.apply(vec![changed]).unwrap();
        assert_eq!(second[0].id.as_deref(), Some(id.as_str()));
        let loaded = store.load(Some("default"));
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].kind, "snippet");
        assert_eq!(store.load(None).len(), 2);
    }

    #[test]
    fn duplicate_names_in_one_batch_are_refused_whole() {
        let store = MemoryStore::new();
        store.apply(vec![spec("kept", "default")]).unwrap();
        let err = store
            .apply(vec![
                spec("a", "default"),
                spec("b", "default"),
                spec("a", "default"),
            ])
            .unwrap_err();
        assert_eq!(
            err,
            Error::DuplicateInBatch {
                namespace: "default".into(),
                name: "a".into(),
                first: 0,
                second: 2,
            }
        );
        assert_eq!(names(&store.load(None)), ["kept"]);
        // The same name in two namespaces is two specs.
        store
            .apply(vec![spec("a", "default"), spec("a", "other")])
            .unwrap();
        assert_eq!(store.load(None).len(), 3);
    }

    #[test]
    fn a_new_id_with_a_taken_name_is_refused() {
        let store = MemoryStore::new();
        store
            .apply(vec![spec("a", "default"), spec("b", "default")])
            .unwrap();
        let mut with_id = spec("b", "default");
        with_id.id = Some("x".into());
        let err = store.apply(vec![with_id]).unwrap_err();
        assert!(matches!(err, Error::DuplicateName { .. }), "{err}");
        assert_eq!(store.load(None).len(), 2);
    }

    #[test]
    fn renaming_by_id_onto_a_taken_name_is_refused() {
        let store = MemoryStore::new();
        let stored = store
            .apply(vec![spec("a", "default"), spec("b", "default")])
            .unwrap();
        let mut renamed = spec("b", "default");
        renamed.id.clone_from(&stored[0].id);
        let err = store.apply(vec![renamed]).unwrap_err();
        assert_eq!(
            err,
            Error::DuplicateName {
                namespace: "default".into(),
                name: "b".into(),
            }
        );
        assert_eq!(names(&store.load(None)), ["a", "b"]);
        // Renaming onto a free name frees the old one.
        let mut renamed = spec("c", "default");
        renamed.id.clone_from(&stored[0].id);
        store.apply(vec![renamed]).unwrap();
        store.apply(vec![spec("a", "default")]).unwrap();
        assert_eq!(names(&store.load(None)), ["c", "b", "a"]);
    }

    #[test]
    fn one_id_twice_in_a_batch_is_refused() {
        let store = MemoryStore::new();
        let stored = store.apply(vec![spec("a", "default")]).unwrap();
        let id = stored[0].id.clone().unwrap();
        let mut by_id = spec("renamed", "default");
        by_id.id = Some(id.clone());
        // By name, the second spec is the same stored spec as the first, by id.
        let err = store.apply(vec![by_id, spec("a", "default")]).unwrap_err();
        assert_eq!(
            err,
            Error::DuplicateId {
                id,
                first: 0,
                second: 1
            }
        );
        assert_eq!(names(&store.load(None)), ["a"]);
    }

    /// Lookups go through an index; at 20,000 specs every upsert and refusal must still find
    /// the right spec.
    #[test]
    fn upserts_and_refusals_stay_right_at_20k_specs() {
        const N: usize = 20_000;
        let store = MemoryStore::new();
        let batch: Vec<Spec> = (0..N)
            .map(|i| spec(&format!("s{i}"), if i % 2 == 0 { "even" } else { "odd" }))
            .collect();
        let stored = store.apply(batch).unwrap();
        assert_eq!(store.load(Some("even")).len(), N / 2);
        let ids: std::collections::HashSet<_> = stored.iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids.len(), N);

        // Upsert by name (no id): keeps the stored id and the stored position.
        let mut by_name = spec("s4000", "even");
        by_name.kind = "snippet".into();
        let again = store.apply(vec![by_name]).unwrap();
        assert_eq!(again[0].id, stored[4000].id);
        // Upsert by id: replaces that spec, whatever its name was.
        let mut by_id = spec("t7001", "odd");
        by_id.id.clone_from(&stored[7001].id);
        store.apply(vec![by_id]).unwrap();
        let all = store.load(None);
        assert_eq!(all.len(), N);
        assert_eq!(all[4000].kind, "snippet");
        assert_eq!(all[7001].name.as_deref(), Some("t7001"));
        // The old name is free again and the new one is taken.
        store.apply(vec![spec("s7001", "odd")]).unwrap();
        let mut clash = spec("t7001", "odd");
        clash.id = Some("new".into());
        assert!(matches!(
            store.apply(vec![clash]),
            Err(Error::DuplicateName { .. })
        ));
        // A duplicate at the end of a large batch is found, and nothing of the batch stored.
        let mut batch: Vec<Spec> = (0..N).map(|i| spec(&format!("u{i}"), "even")).collect();
        batch.push(spec("u123", "even"));
        assert_eq!(
            store.apply(batch).err(),
            Some(Error::DuplicateInBatch {
                namespace: "even".into(),
                name: "u123".into(),
                first: 123,
                second: N,
            })
        );
        assert_eq!(store.load(None).len(), N + 1);
    }

    fn names(specs: &[Spec]) -> Vec<&str> {
        specs.iter().filter_map(|s| s.name.as_deref()).collect()
    }
}
