//! IO node kinds: nodes that read or write outside the workflow: `print`, `sql`.

use uniflow_core::Registry;

pub mod format;
pub mod print;
pub mod sql;

/// Adds every IO kind.
pub fn register(registry: &mut Registry) {
    registry.add::<print::PrintSpec>();
    registry.add::<sql::SqlSpec>();
}

#[cfg(test)]
mod tests;
