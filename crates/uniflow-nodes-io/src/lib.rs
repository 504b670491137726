//! IO node kinds: nodes that read or write outside the workflow. `print` so far.

use uniflow_core::Registry;

pub mod format;
pub mod print;

/// Adds every IO kind.
pub fn register(registry: &mut Registry) {
    registry.add::<print::PrintSpec>();
}
