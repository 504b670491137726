//! The uniflow runtime: packets, processes, nodes and the compiled graph.
//!
//! The packet protocol in one paragraph: a node writes a [`Packet`] to one of
//! its output ports and gets exactly one answer back. An unlinked port answers with the packet
//! itself (the *implicit response*, so `listener -> router -> snippet` answers HTTP without
//! wiring a reply); a port linked to one input answers with that node's answer; a port linked
//! to several answers with the [`merge`] of their answers in link order. Because a write is a
//! call that returns its answer, answers come back in write order per port and process by
//! construction. Errors are packets too: a failing node writes them to its `error` port, and an
//! unlinked `error` port sends them back up the chain.
//!
//! This crate names no node kind and knows nothing about HTTP: kinds live in the
//! `uniflow-nodes-*` crates and register themselves in a [`Registry`].

pub mod agent;
mod error;
mod generation;
mod graph;
mod node;
mod packet;
mod process;
mod registry;
mod subgraph;

#[cfg(any(test, feature = "testing"))]
pub mod cases;
pub mod port;
pub mod shape;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::Error;
pub use generation::{Build, Failed, Generation, Retired, Wrap, key};
pub use graph::{Graph, Symbol, Target};
pub use node::{
    BoxFlow, Cx, Flow, FlowFuture, InPort, LoadCx, MAX_DEPTH, Needs, Node, NodeId, OutPort, Place,
};
pub use packet::{Packet, merge};
pub use process::{Local, Process, ProcessSlot, Settle, Settling};
pub use registry::{CompileCx, NodeSpec, Registry};
pub use subgraph::{OUTPUT_KIND, Subgraph, SubgraphBuilder};

#[cfg(test)]
mod tests;
