//! The crate's error.

/// Why a graph could not load or a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A node failed to start; the message says why (e.g. an address already in use).
    #[error("{0}")]
    Start(String),
    /// A node's `init` port answered this error.
    #[error("its init port answered an error: {0}")]
    Init(String),
    /// A node of the graph failed to load; the graph was unloaded again.
    #[error("spec `{spec}` failed to load: {cause}")]
    Load {
        /// The spec's label.
        spec: String,
        /// What the node said (part of the message, so it is not also a `source`).
        cause: Box<Error>,
    },
}
