//! Integration tests of the network kinds over real sockets on 127.0.0.1: one binary, one
//! module per topic. Workflows use the core's test kinds (`test-const`, `test-echo`, ...) so
//! no other node crate is needed.

mod bodies;
mod listener;
mod support;
mod websocket;
