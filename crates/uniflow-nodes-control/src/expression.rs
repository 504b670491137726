//! Expressions in node fields: `if.when`, `switch.matches[].when` and `reduce.action`.
//!
//! They are written in one language, CEL by default as upstream configured it, and compiled
//! once at load through the [`Languages`] registry, so a syntax error fails the spec with its
//! field path and a request never parses code. The payload is bound to `self`.

use std::sync::Arc;
use std::time::Duration;

use uniflow_core::CompileCx;
use uniflow_lang::{Languages, Options, Program};
use uniflow_spec::Diagnostic;

/// The language expressions are written in.
pub const LANGUAGE: &str = "cel";

/// Compiles the expression in field `path`, to run within `timeout` when one is set.
///
/// # Errors
/// The language is not registered, or the code does not parse; the diagnostic names `path`.
pub(crate) fn compile(
    languages: &Languages,
    code: &str,
    timeout: Option<Duration>,
    cx: &CompileCx<'_>,
    path: &str,
) -> Result<Arc<dyn Program>, Diagnostic> {
    if code.trim().is_empty() {
        return Err(cx.error(path, "missing required field"));
    }
    languages
        .compile_with(LANGUAGE, code, &Options::with_timeout(timeout))
        .map_err(|e| cx.error(path, e.to_string()))
}
