//! Well-known port names. Kinds name their ports with these constants rather than literals.

/// The usual input.
pub const IN: &str = "in";
/// The usual output.
pub const OUT: &str = "out";
/// Where failures go; when unlinked, an error travels back as the answer.
pub const ERROR: &str = "error";
/// A bidirectional port (gateway, websocket, session).
pub const IO: &str = "io";
/// Written once with `null` after the graph has loaded.
pub const INIT: &str = "init";
