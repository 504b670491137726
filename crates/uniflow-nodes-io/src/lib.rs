//! IO node kinds: nodes that read or write outside the workflow (`print`, `scan`, `sql`), and the
//! timed source `schedule`.

use uniflow_core::Registry;

pub mod format;
pub mod print;
pub mod scan;
pub mod schedule;
pub mod sql;

/// Locks `m`, also after a panic elsewhere poisoned it: what these locks guard (a file, a
/// pool, a timer's handle) is whole between statements, so a panic cannot leave it half-set.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Adds every IO kind.
pub fn register(registry: &mut Registry) {
    registry.add::<print::PrintSpec>();
    registry.add::<scan::ScanSpec>();
    registry.add::<sql::SqlSpec>();
    registry.add::<schedule::ScheduleSpec>();
}

#[cfg(test)]
mod tests;
