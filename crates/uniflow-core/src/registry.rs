//! Node kinds: from a spec's `kind` to a compiled node.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use uniflow_spec::{Diagnostic, Spec, decode};

use crate::node::Node;

/// What a kind's compile step gets besides its typed fields.
pub struct CompileCx<'a> {
    /// The whole spec (after env templating).
    pub spec: &'a Spec,
    /// How diagnostics name the spec.
    pub label: &'a str,
    /// The registry, for kinds that compile child specs (`block`).
    pub registry: &'a Registry,
}

impl CompileCx<'_> {
    /// A problem with one of this spec's fields.
    pub fn error(&self, path: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.label, path, message)
    }

    /// A problem an inner spec (a `block`'s child, a chart's spec) has, placed in this spec
    /// under `prefix`: `specs[1].code` of spec `g`.
    pub fn nested(&self, prefix: &str, inner: Diagnostic) -> Diagnostic {
        let path = if inner.path.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", inner.path)
        };
        self.error(path, inner.message)
    }
}

/// A kind's typed spec: its fields decode into `Self`, which compiles into a node.
pub trait NodeSpec: DeserializeOwned + 'static {
    /// The `kind` string that selects this spec.
    const KIND: &'static str;

    /// Builds the node: everything a request needs (routes, parsed code) is prepared here.
    ///
    /// # Errors
    /// Every problem with the fields, each naming its path.
    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>>;
}

type CompileFn = dyn Fn(&CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> + Send + Sync;

/// Maps kinds to their compile step. Each node crate adds its kinds with one `register`
/// function, so `grep '"router"'` finds a kind in one place.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<CompileFn>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a kind whose typed spec compiles itself.
    pub fn add<S: NodeSpec>(&mut self) {
        self.add_with(S::KIND, |spec: S, cx| spec.compile(cx));
    }

    /// Adds a kind with a compile closure, for kinds that need shared services (a language
    /// registry, say) captured by the closure.
    pub fn add_with<S, F>(&mut self, kind: &str, compile: F)
    where
        S: DeserializeOwned + 'static,
        F: Fn(S, &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> + Send + Sync + 'static,
    {
        let f = move |cx: &CompileCx<'_>| {
            let typed: S = decode(
                &uniflow_value::Value::Map(cx.spec.fields.clone()),
                cx.label,
                "",
            )
            .map_err(|d| vec![d])?;
            compile(typed, cx)
        };
        self.kinds.insert(kind.to_owned(), Arc::new(f));
    }

    /// Whether `kind` is known.
    pub fn contains(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    /// The known kinds, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// Compiles one spec.
    ///
    /// # Errors
    /// An unknown kind, or every problem the kind found.
    pub fn compile(&self, spec: &Spec, label: &str) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let Some(compile) = self.kinds.get(&spec.kind) else {
            let known = self.kinds().collect::<Vec<_>>().join(", ");
            return Err(vec![Diagnostic::new(
                label,
                "kind",
                format!("unknown kind `{}` (known kinds: {known})", spec.kind),
            )]);
        };
        compile(&CompileCx {
            spec,
            label,
            registry: self,
        })
    }
}
