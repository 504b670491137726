//! The `uniflow` command's library half: configuration, the registry of every node kind, and
//! the `start` sequence. `main.rs` only parses flags and reports errors; tests drive the same
//! functions.

pub mod profile;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use uniflow_core::{Graph, Registry};
use uniflow_lang::Languages;
use uniflow_spec::Diagnostics;
use uniflow_store::MemoryStore;

/// Every node kind this build knows.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    uniflow_nodes_control::register(&mut registry, Arc::new(Languages::default()));
    uniflow_nodes_net::register(&mut registry);
    uniflow_nodes_io::register(&mut registry);
    registry
}

/// Settings from `.uniflow.toml`, overridden by `UNIFLOW_<SECTION>_<KEY>` variables.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// `[database]`.
    #[serde(default)]
    pub database: DatabaseConfig,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `mem://` (the default); `sqlite://` and `postgres://` come with the stores work.
    #[serde(default = "DatabaseConfig::default_url")]
    pub url: String,
}

impl DatabaseConfig {
    fn default_url() -> String {
        "mem://".to_owned()
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: DatabaseConfig::default_url(),
        }
    }
}

impl Config {
    /// Reads `.uniflow.toml` in `dir` (when present) and the environment.
    ///
    /// # Errors
    /// A malformed file or variable.
    pub fn load(dir: &Path) -> anyhow::Result<Config> {
        use figment::providers::{Env, Format, Toml};
        let file = dir.join(".uniflow.toml");
        let config: Config = figment::Figment::new()
            .merge(Toml::file(&file))
            .merge(Env::prefixed("UNIFLOW_").split("_"))
            .extract()
            .with_context(|| {
                format!(
                    "reading configuration ({} and UNIFLOW_* variables)",
                    file.display()
                )
            })?;
        Ok(config)
    }

    /// Checks that this build supports the settings.
    ///
    /// # Errors
    /// A database URL other than `mem://`.
    pub fn validate(&self) -> anyhow::Result<()> {
        let url = self.database.url.trim();
        if !(url.is_empty() || url.starts_with("mem://") || url.starts_with("memory://")) {
            bail!("database.url `{url}` is not supported yet: only `mem://` (the in-memory store)");
        }
        Ok(())
    }
}

/// What `start` needs.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The namespace to run.
    pub namespace: String,
    /// A spec file to apply before starting.
    pub from_specs: Option<PathBuf>,
}

/// A loaded, running namespace.
pub struct Running {
    /// The graph serving requests.
    pub graph: Arc<Graph>,
}

/// Applies the spec file, compiles the namespace and starts it.
///
/// # Errors
/// Every problem in the specs (with file, spec and field), or a node that cannot start.
pub async fn start(config: &Config, options: &StartOptions) -> anyhow::Result<Running> {
    config.validate()?;
    let store = MemoryStore::new();
    let file = options.from_specs.as_ref().map(|p| p.display().to_string());
    if let Some(path) = &options.from_specs {
        let specs = uniflow_spec::load_file(path, &options.namespace)
            .map_err(|d| anyhow::anyhow!("{d}"))?;
        let applied = store
            .apply(specs)
            .with_context(|| format!("applying {}", path.display()))?;
        tracing::info!(file = %path.display(), specs = applied.len(), "applied specs");
    }
    let specs = store.load(Some(&options.namespace));
    let graph = Graph::compile(specs, &registry(), &|_, _| None).map_err(|d| {
        // Specs came from the file, so place the problems there.
        let placed = Diagnostics(
            d.0.into_iter()
                .map(|d| d.in_file(file.as_deref()))
                .collect(),
        );
        anyhow::anyhow!("{placed}")
    })?;
    graph.load().await.context("starting the workflow")?;
    tracing::info!(namespace = %options.namespace, nodes = graph.symbols().len(), "started");
    Ok(Running { graph })
}

impl Running {
    /// Stops every node; listeners finish in-flight requests (bounded).
    pub async fn stop(self) {
        self.graph.unload().await;
    }
}
