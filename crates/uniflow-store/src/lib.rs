//! Where specs live between loads.
//!
//! [`MemoryStore`] is the `mem://` database: specs keyed by id, with names unique per
//! namespace. It assigns a UUID v7 to a spec without an id and puts a spec without a namespace
//! in `default`, as upstream's store does. [`MemoryStore::apply`] is the upsert that
//! `start --from-specs` (and later `apply`) uses. Change events for live reload, and the SQLite
//! and PostgreSQL stores, join this crate with the reload work.

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
}

/// The in-memory spec store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // Writes are rare (apply, admin API) and reads happen at load time, never per request,
    // so one lock is enough here.
    specs: RwLock<Vec<Spec>>,
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
    /// When two specs of the batch share a name in a namespace; nothing is stored then.
    pub fn apply(&self, specs: Vec<Spec>) -> Result<Vec<Spec>, Error> {
        let mut stored = self.specs.write().unwrap_or_else(|e| e.into_inner());
        let mut next = stored.clone();
        let mut applied = Vec::with_capacity(specs.len());
        for mut spec in specs {
            let existing = next.iter().position(|s| match (&spec.id, &spec.name) {
                (Some(id), _) => s.id.as_ref() == Some(id),
                (None, Some(name)) => {
                    s.namespace == spec.namespace && s.name.as_ref() == Some(name)
                }
                (None, None) => false,
            });
            match existing {
                Some(i) => {
                    spec.id.clone_from(&next[i].id);
                    next[i] = spec.clone();
                }
                None => {
                    if let Some(name) = &spec.name
                        && next
                            .iter()
                            .any(|s| s.namespace == spec.namespace && s.name.as_ref() == Some(name))
                    {
                        return Err(Error::DuplicateName {
                            namespace: spec.namespace,
                            name: name.clone(),
                        });
                    }
                    spec.id
                        .get_or_insert_with(|| uuid::Uuid::now_v7().to_string());
                    next.push(spec.clone());
                }
            }
            applied.push(spec);
        }
        *stored = next;
        Ok(applied)
    }

    /// The specs of one namespace (all namespaces for `None`), in insertion order.
    pub fn load(&self, namespace: Option<&str>) -> Vec<Spec> {
        let stored = self.specs.read().unwrap_or_else(|e| e.into_inner());
        stored
            .iter()
            .filter(|s| namespace.is_none_or(|ns| s.namespace == ns))
            .cloned()
            .collect()
    }
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
        let err = store.apply(vec![
            spec("a", "default"),
            spec("b", "default"),
            spec("a", "default"),
        ]);
        // The second `a` replaces the first within the batch, as an upsert; so this succeeds.
        assert!(err.is_ok());
        let mut with_id = spec("b", "default");
        with_id.id = Some("x".into());
        let err = store.apply(vec![with_id]).unwrap_err();
        assert!(matches!(err, Error::DuplicateName { .. }), "{err}");
        assert_eq!(store.load(None).len(), 2);
    }
}
