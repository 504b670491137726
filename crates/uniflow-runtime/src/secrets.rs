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

impl Secrets {
    /// `text` with every secret value in it masked: a message that echoes a field (a decode
    /// error quoting what it could not read) must not carry a secret into a log.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.all {
            mask(&secret.data, &mut out);
        }
        out
    }
}

/// Masks each string and number inside `data` in `text`. Values shorter than three
/// characters are left alone: masking every `1` or `on` would garble the message and hide
/// nothing.
fn mask(data: &Value, text: &mut String) {
    let leaf = match data {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Uint(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::List(items) => {
            items.iter().for_each(|v| mask(v, text));
            return;
        }
        Value::Map(map) => {
            map.iter().for_each(|(_, v)| mask(v, text));
            return;
        }
        _ => return,
    };
    if leaf.chars().count() >= 3 && text.contains(&leaf) {
        *text = text.replace(&leaf, "******");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_masks_every_secret_value_in_a_message() {
        let secrets = Secrets::new(vec![Secret {
            name: Some("db".into()),
            namespace: "default".into(),
            data: Value::Map(
                [
                    (Value::from("password"), Value::from("hunter2")),
                    (Value::from("port"), Value::Int(5432)),
                    (Value::from("flag"), Value::from("on")),
                ]
                .into_iter()
                .collect(),
            ),
            ..Secret::default()
        }]);
        assert_eq!(
            secrets.redact("invalid type: string \"hunter2\", expected u16 (port 5432, on)"),
            "invalid type: string \"******\", expected u16 (port ******, on)"
        );
    }
}
