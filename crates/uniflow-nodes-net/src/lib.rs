//! Network node kinds: `listener` (an HTTP/1.1 and h2c server that starts a process per
//! request) and `router` (method and path dispatch with `:param` and `*`).
//!
//! [`payload`] maps requests to values and answers to responses (reference §4); it is public
//! so benchmarks can run the in-process ping path without a socket.

use uniflow_core::Registry;

pub mod listener;
pub mod payload;
pub mod router;

/// Adds every network kind.
pub fn register(registry: &mut Registry) {
    registry.add::<listener::ListenerSpec>();
    registry.add::<router::RouterSpec>();
}
