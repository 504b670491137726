//! Control node kinds: the nodes that compute and steer packets inside a workflow.
//!
//! One file per kind, each with its `<Kind>Spec` (the fields) and `<Kind>Node` (the compiled
//! node). [`register`] adds them all to a registry.

use std::sync::Arc;

use uniflow_core::Registry;
use uniflow_lang::Languages;

pub mod nop;
pub mod snippet;

/// Adds every control kind; snippets compile with `languages`.
pub fn register(registry: &mut Registry, languages: Arc<Languages>) {
    registry.add::<nop::NopSpec>();
    snippet::register(registry, languages);
}
