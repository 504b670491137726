//! The crate's error: a value that could not be decoded into a typed struct.

use std::fmt::Display;

/// Why a [`crate::Value`] could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message from the decoder (wrong type, missing field, bad number).
    #[error("{0}")]
    Message(String),
}

impl serde::de::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error::Message(msg.to_string())
    }
}
