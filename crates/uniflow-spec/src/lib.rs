//! Node specs: what a workflow file declares, before anything is compiled.
//!
//! A spec is `id, kind, namespace, name, annotations, ports, env` plus the kind's own fields
//! (`docs/nodes/` lists each kind's). This crate reads specs from YAML or JSON ([`parse`],
//! [`load_file`]), resolves `env` templating ([`bind`]), decodes a kind's fields into its typed
//! struct ([`decode`]) and runs the checks that need no node ([`check`]). Every problem is a
//! [`Diagnostic`] naming the file, the spec and the field, and every function that can find
//! several problems reports them all at once.
//!
//! The crate knows nothing about nodes: which ports a kind has is checked by the runtime.

pub mod duration;

mod check;
mod diagnostic;
mod load;
mod spec;
mod template;

pub use check::{check, check_unique};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use load::{Format, load_file, parse, parse_in};
pub use spec::{DEFAULT_NAMESPACE, EnvValue, PortName, PortRef, Spec, decode};
pub use template::{SecretLookup, bind, render};
