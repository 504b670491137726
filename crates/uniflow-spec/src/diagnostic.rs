//! Problems found while loading, checking or compiling specs, each with its place.

use std::fmt;

/// One problem, with where it is: the file, the spec and the field path inside the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the spec came from, when it came from one.
    pub file: Option<String>,
    /// The spec's name, or `#N` (its position in the file) when it has none.
    pub spec: Option<String>,
    /// The field path inside the spec, e.g. `routes[1].port`; empty for the whole spec.
    pub path: String,
    /// What is wrong, lowercase and without a trailing period.
    pub message: String,
}

impl Diagnostic {
    /// A problem with a spec's field.
    pub fn new(
        spec: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: None,
            spec: Some(spec.into()),
            path: path.into(),
            message: message.into(),
        }
    }

    /// A problem with a whole file (syntax, shape).
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: Some(file.into()),
            spec: None,
            path: String::new(),
            message: message.into(),
        }
    }

    /// The same problem, placed in a file.
    pub fn in_file(mut self, file: Option<&str>) -> Self {
        if self.file.is_none() {
            self.file = file.map(str::to_owned);
        }
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if let Some(spec) = &self.spec {
            write!(f, "spec `{spec}`")?;
            if !self.path.is_empty() {
                write!(f, " field `{}`", self.path)?;
            }
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one pass, in the order they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was found, else the problems.
    ///
    /// # Errors
    /// When at least one problem was recorded.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} problem{} found:", if n == 1 { "" } else { "s" })?;
        for d in &self.0 {
            writeln!(f, "  - {d}")?;
        }
        Ok(())
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl Extend<Diagnostic> for Diagnostics {
    fn extend<T: IntoIterator<Item = Diagnostic>>(&mut self, iter: T) {
        self.0.extend(iter);
    }
}
