//! The IO kinds' tests on real parts, one binary: `schedule` on the real clock; `sql` on
//! SQLite files and on the PostgreSQL server of `UNIFLOW_TEST_POSTGRES_URL`
//! (`scripts/postgres`; skipped, saying so, without one unless `UNIFLOW_REQUIRE_POSTGRES=1`).
//! The packet protocol's cases are YAML in `src/tests/`.

mod schedule;
mod sql;
