//! System node kinds: a workflow that manages the engine it runs in.
//!
//! `native` (also `syscall`, upstream's later name) reads and changes what the store holds
//! for the runtime's namespace: specs, secrets and charts, by opcode (`specs.create`, ...).
//! `signal` writes each change of one kind of resource to its `out`. Upstream's
//! `examples/system.yaml` builds its admin API from them; see `docs/nodes/native.md` and
//! `docs/nodes/signal.md`.
//!
//! Both need the store, so they are added with [`register`] once it is open; a registry
//! without them reports their kinds as unknown.

pub mod native;
mod patch;
pub mod signal;

use uniflow_core::Registry;
use uniflow_store::Store;

/// What the system kinds work on: the store, and the namespace the runtime runs (where
/// resources without a namespace go, and what an empty example matches).
#[derive(Clone)]
pub struct System {
    /// The store.
    pub store: Store,
    /// The runtime's namespace.
    pub namespace: String,
}

/// Adds `native`, its alias `syscall`, and `signal`, working on `system`.
pub fn register(registry: &mut Registry, system: System) {
    native::register(registry, &system);
    signal::register(registry, &system);
}
