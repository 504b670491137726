//! Where each resource of an `apply` batch goes, checked for the whole batch before anything
//! is written: every backend runs this same plan over an index of what it stores.

use std::collections::HashMap;
use std::hash::Hash;

use uniflow_spec::Resource;

use crate::Error;

/// Finds stored resources by id and by (namespace, name). The memory store's index is its
/// hash maps; a SQL store's is built from the rows the batch's ids and names select.
pub(crate) trait Index {
    /// Names one stored resource.
    type Slot: Copy + Eq + Hash;
    /// The stored resource with this id.
    fn by_id(&self, id: &str) -> Option<Self::Slot>;
    /// The stored resource with this name in this namespace.
    fn by_name(&self, namespace: &str, name: &str) -> Option<Self::Slot>;
    /// The id of a stored resource.
    fn id_of(&self, slot: Self::Slot) -> String;
}

/// A resource's id when it has a usable one: an empty id is no id.
pub(crate) fn id_of<R: Resource>(item: &R) -> Option<&str> {
    item.id().filter(|id| !id.is_empty())
}

/// The stored resource a new one replaces: the one with its id, or, when it has none, the one
/// with its namespace and name.
pub(crate) fn slot<R: Resource, I: Index>(index: &I, item: &R) -> Option<I::Slot> {
    match (id_of(item), item.name()) {
        (Some(id), _) => index.by_id(id),
        (None, Some(name)) => index.by_name(item.namespace(), name),
        (None, None) => None,
    }
}

/// Where each resource of `batch` goes (the stored one it replaces, or `None` for a new one),
/// after checking that the batch can be applied whole: no name twice in a namespace, no stored
/// resource twice, no name taken by another stored resource. Namespaces are filled in already.
pub(crate) fn plan<R: Resource, I: Index>(
    index: &I,
    batch: &[R],
) -> Result<Vec<Option<I::Slot>>, Error> {
    let kind = R::KIND;
    let mut names: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.len());
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut replaced: HashMap<I::Slot, usize> = HashMap::new();
    let mut slots = Vec::with_capacity(batch.len());
    for (position, item) in batch.iter().enumerate() {
        let slot = slot(index, item);
        if let Some(name) = item.name() {
            if let Some(first) = names.insert((item.namespace(), name), position) {
                return Err(Error::DuplicateInBatch {
                    kind,
                    namespace: item.namespace().to_owned(),
                    name: name.to_owned(),
                    first,
                    second: position,
                });
            }
            // The name may be taken only by the resource this one replaces.
            if let Some(holder) = index.by_name(item.namespace(), name)
                && slot != Some(holder)
            {
                return Err(Error::DuplicateName {
                    kind,
                    namespace: item.namespace().to_owned(),
                    name: name.to_owned(),
                });
            }
        }
        let same = match (slot, id_of(item)) {
            (Some(s), _) => replaced.insert(s, position),
            (None, Some(id)) => ids.insert(id, position),
            (None, None) => None,
        };
        if let Some(first) = same {
            let id = slot
                .map(|s| index.id_of(s))
                .or_else(|| id_of(item).map(str::to_owned))
                .unwrap_or_default();
            return Err(Error::DuplicateId {
                kind,
                id,
                first,
                second: position,
            });
        }
        slots.push(slot);
    }
    Ok(slots)
}

/// Fills in the namespace of each resource that names none, and refuses the batch when one
/// lacks a required field: a store keeps only what it can read back.
pub(crate) fn prepare<R: Resource>(items: &mut [R]) -> Result<(), Error> {
    for (position, item) in items.iter_mut().enumerate() {
        if item.namespace().is_empty() {
            item.set_namespace(uniflow_spec::DEFAULT_NAMESPACE.to_owned());
        }
        let label = label(item, position);
        if let Err(problems) = item.validate(&label) {
            let message = problems
                .iter()
                .map(|d| format!("field `{}`: {}", d.path, d.message))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::Invalid {
                kind: R::KIND,
                label,
                message,
            });
        }
    }
    Ok(())
}

/// How messages name a resource of a batch: its name, else its id, else its position.
pub(crate) fn label<R: Resource>(item: &R, position: usize) -> String {
    item.name()
        .or(id_of(item))
        .map_or_else(|| format!("#{position}"), str::to_owned)
}

/// A new id: a UUID v7, so ids sort by creation time.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
