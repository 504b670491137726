//! The one error type of the crate.
//!
//! Messages name the store (its URL without the password, or its file) and the resource by
//! kind, namespace, name or id, never a secret's data or a password. Database errors are kept
//! as their text, scrubbed of the password, so the type stays `Clone` and comparable.

use uniflow_spec::ResourceKind;

/// Why a store could not be opened, or refused or failed an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL names no backend this crate has.
    #[error(
        "unsupported store URL `{url}`: expected `mem://`, `sqlite://PATH` or `postgres://...`"
    )]
    UnsupportedUrl {
        /// The URL, without its password.
        url: String,
    },
    /// The store could not be opened: a missing directory, a file that is not a database, an
    /// unreachable server, a schema that cannot be migrated.
    #[error("cannot open store {store}: {message}")]
    Open {
        /// The store's URL, without its password.
        store: String,
        /// What went wrong.
        message: String,
    },
    /// Another resource of the kind already has this name in this namespace.
    #[error(
        "duplicated key: a {} named `{name}` already exists in namespace `{namespace}`",
        kind.singular()
    )]
    DuplicateName {
        /// The kind.
        kind: ResourceKind,
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// Two resources of one batch share a name in a namespace.
    #[error(
        "duplicated key: {kind} #{first} and #{second} are both named `{name}` in namespace `{namespace}`"
    )]
    DuplicateInBatch {
        /// The kind.
        kind: ResourceKind,
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
        /// The first one's position in the batch.
        first: usize,
        /// The second one's position in the batch.
        second: usize,
    },
    /// Two resources of one batch are the same stored resource: they share an id, or one
    /// names by id the resource that the other names by name.
    #[error(
        "duplicated key: {kind} #{first} and #{second} are both the {} with id `{id}`",
        kind.singular()
    )]
    DuplicateId {
        /// The kind.
        kind: ResourceKind,
        /// The id.
        id: String,
        /// The first one's position in the batch.
        first: usize,
        /// The second one's position in the batch.
        second: usize,
    },
    /// The database refused the write because another writer took one of its ids or names
    /// at the same time (a unique constraint). Nothing of the batch was written.
    #[error(
        "duplicated key: another writer stored a {} with one of these ids or names at the same time ({store}: {message})",
        kind.singular()
    )]
    Conflict {
        /// The kind.
        kind: ResourceKind,
        /// The store.
        store: String,
        /// The database's message.
        message: String,
    },
    /// A resource lacks a required field (it could not be read back), or cannot be written
    /// as JSON (a map key JSON cannot hold, for example). Nothing of the batch was written.
    #[error("{} `{label}` cannot be stored: {message}", kind.singular())]
    Invalid {
        /// The kind.
        kind: ResourceKind,
        /// The resource's name, id or position in the batch.
        label: String,
        /// What is wrong.
        message: String,
    },
    /// A stored resource no longer reads as one (written by hand, or by another version).
    #[error("{store}: stored {} `{id}` cannot be read: {message}", kind.singular())]
    Corrupt {
        /// The store.
        store: String,
        /// The kind.
        kind: ResourceKind,
        /// Its id.
        id: String,
        /// What is wrong with it.
        message: String,
    },
    /// The database failed: a lost connection, a file locked past the busy timeout, a
    /// corrupted file.
    #[error("{store}: {message}")]
    Database {
        /// The store.
        store: String,
        /// What went wrong.
        message: String,
    },
}
