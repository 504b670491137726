//! Node specs: what a workflow file declares, before anything is compiled.
//!
//! A spec is `id, kind, namespace, name, annotations, ports, env` plus the kind's own fields
//! (`docs/nodes/` lists each kind's). This crate reads specs from YAML or JSON ([`parse`],
//! [`load_file`]), resolves `env` templating ([`bind`]), decodes a kind's fields into its typed
//! struct ([`decode`]) and runs the checks that need no node ([`check`]). Every problem is a
//! [`Diagnostic`] naming the file, the spec and the field, and every function that can find
//! several problems reports them all at once.
//!
//! Specs, [`Secret`]s and [`Chart`]s are the three stored kinds of [`Resource`]; secrets and
//! charts load from files like specs ([`load_secrets_file`], [`load_charts_file`]).
//!
//! The crate knows nothing about nodes: which ports a kind has is checked by the runtime.

pub mod duration;

mod check;
mod credentials;
mod diagnostic;
mod load;
mod resource;
mod spec;
mod template;

pub use check::{check, check_unique};
pub use credentials::redact_credentials;
pub use diagnostic::{Diagnostic, Diagnostics};
pub use load::{
    Format, load_charts_file, load_file, load_secrets_file, parse, parse_charts, parse_in,
    parse_secrets,
};
pub use resource::{Chart, Resource, ResourceKind, Secret};
pub use spec::{DEFAULT_NAMESPACE, EnvValue, PortName, PortRef, Spec, decode};
pub use template::{SecretLookup, bind, render};
