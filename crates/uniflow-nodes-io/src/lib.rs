//! IO node kinds: nodes that read or write outside the workflow (`print`, `scan`, `sql`), and the
//! timed source `schedule`.

use uniflow_core::Registry;

pub mod format;
pub mod print;
pub mod scan;
pub mod schedule;
pub mod sql;

/// Adds every IO kind.
pub fn register(registry: &mut Registry) {
    registry.add::<print::PrintSpec>();
    registry.add::<scan::ScanSpec>();
    registry.add::<sql::SqlSpec>();
    registry.add::<schedule::ScheduleSpec>();
}

#[cfg(test)]
mod tests;
