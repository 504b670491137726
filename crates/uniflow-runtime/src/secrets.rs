//! The secrets of a namespace, found by id or by name for env entries that name one.

use std::collections::HashMap;

use uniflow_spec::{EnvValue, Secret};
use uniflow_value::Value;

/// The secrets of one load, indexed.
#[derive(Debug, Default)]
pub(crate) struct Secrets {
    by_id: HashMap<String, usize>,
    by_name: HashMap<(String, String), usize>,
    all: Vec<Secret>,
}

impl Secrets {
    pub(crate) fn new(all: Vec<Secret>) -> Secrets {
        let mut by_id = HashMap::with_capacity(all.len());
        let mut by_name = HashMap::with_capacity(all.len());
        for (i, secret) in all.iter().enumerate() {
            if let Some(id) = &secret.id {
                by_id.insert(id.clone(), i);
            }
            if let Some(name) = &secret.name {
                by_name.insert((secret.namespace.clone(), name.clone()), i);
            }
        }
        Secrets {
            by_id,
            by_name,
            all,
        }
    }

    /// The data of the secret an env entry names, in `namespace`: by id when it has one (and
    /// then its name, if given, must match too, as upstream's example lookup), else by name.
    pub(crate) fn lookup(&self, entry: &EnvValue, namespace: &str) -> Option<Value> {
        let found = match (&entry.id, &entry.name) {
            (Some(id), name) => self.by_id.get(id).map(|&i| &self.all[i]).filter(|s| {
                s.namespace == namespace && name.as_ref().is_none_or(|n| s.name.as_ref() == Some(n))
            }),
            (None, Some(name)) => self
                .by_name
                .get(&(namespace.to_owned(), name.clone()))
                .map(|&i| &self.all[i]),
            (None, None) => None,
        };
        found.map(|s| s.data.clone())
    }
}
