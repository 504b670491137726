//! Network node kinds: `listener` (an HTTP server that starts a process per request),
//! `router` (method and path dispatch with `:param` and `*`), `http` (a client), `proxy` (a
//! reverse proxy), `gateway` (a WebSocket upgrade of the request) and `websocket` (a
//! WebSocket client).
//!
//! [`payload`] maps requests to values and answers to responses; it is public
//! so benchmarks can run the in-process ping path without a socket. [`coding`] holds the
//! content codings (gzip, deflate, br) shared by the server and the clients.

use uniflow_core::Registry;

mod client;
pub mod coding;
mod exchange;
pub mod gateway;
pub mod http;
pub mod listener;
mod multipart;
pub mod payload;
pub mod proxy;
pub mod router;
mod tls;
pub mod trace;
mod upgrade;
pub mod websocket;
mod ws;

/// Adds every network kind.
pub fn register(registry: &mut Registry) {
    registry.add::<listener::ListenerSpec>();
    registry.add::<router::RouterSpec>();
    registry.add::<http::HttpSpec>();
    registry.add::<proxy::ProxySpec>();
    registry.add::<gateway::GatewaySpec>();
    registry.add::<websocket::WebSocketSpec>();
}
