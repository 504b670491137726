//! The store's tests, one binary: `behaviour` runs one body per backend (memory, SQLite,
//! PostgreSQL); `sqlite` and `postgres` test what only that backend has (files, processes,
//! the listener). PostgreSQL tests need `UNIFLOW_TEST_POSTGRES_URL` (see `scripts/postgres`).

mod behaviour;
mod postgres;
mod sqlite;
mod support;
