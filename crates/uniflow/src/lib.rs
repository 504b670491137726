//! The `uniflow` command's library half: configuration, the registry of every node kind, and
//! the `start` sequence. `main.rs` only parses flags and reports errors; tests drive the same
//! functions.

pub mod profile;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use uniflow_core::{Graph, Registry};
use uniflow_lang::Languages;
use uniflow_spec::{Diagnostics, Spec};
use uniflow_store::{Example, Store};

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
    /// `[shutdown]`.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
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

/// `[shutdown]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// How long `start` waits after SIGINT or SIGTERM for in-flight requests to finish before
    /// it exits without them (`UNIFLOW_SHUTDOWN_TIMEOUT`, `--shutdown-timeout`).
    #[serde(
        default = "ShutdownConfig::default_timeout",
        deserialize_with = "deserialize_timeout"
    )]
    pub timeout: Duration,
}

impl ShutdownConfig {
    fn default_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout: ShutdownConfig::default_timeout(),
        }
    }
}

/// Reads a timeout such as `"500ms"`, `"30s"` or `"1m30s"`.
///
/// # Errors
/// A malformed duration, or a bare number: in a spec that would be nanoseconds, and a timeout
/// of 30 ns is never what `30` meant.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` has no unit: write e.g. \"{text}s\" or \"{text}ms\""
        ));
    }
    uniflow_spec::duration::parse(text)
}

fn deserialize_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Timeout;
    impl serde::de::Visitor<'_> for Timeout {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration with a unit, such as \"30s\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_timeout(v).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
            self.visit_str(&v.to_string())
        }
    }
    d.deserialize_any(Timeout)
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
    let registry = registry();
    let store = Store::open("mem://").await?;
    let file = options.from_specs.as_ref().map(|p| p.display().to_string());
    if let Some(path) = &options.from_specs {
        let specs = uniflow_spec::load_file(path, &options.namespace)
            .map_err(|d| anyhow::anyhow!("{d}"))?;
        check_file(specs.as_slice(), &registry, file.as_deref())?;
        let applied = store
            .apply(specs)
            .await
            .with_context(|| format!("applying {}", path.display()))?;
        tracing::info!(file = %path.display(), specs = applied.len(), "applied specs");
    }
    let specs: Vec<Spec> = store
        .load(&[Example::in_namespace(options.namespace.as_str())])
        .await?;
    let graph = Graph::compile(specs, &registry, &|_, _| None)
        // Specs came from the file, so place the problems there.
        .map_err(|d| placed(d, file.as_deref()))?;
    graph.load().await.context("starting the workflow")?;
    if graph.symbols().is_empty() {
        // Not an error: a store filled while the namespace runs is a valid way to start.
        tracing::warn!(
            namespace = %options.namespace,
            "namespace `{}` has no specs: nothing is loaded or served",
            options.namespace
        );
    } else {
        tracing::info!(namespace = %options.namespace, nodes = graph.symbols().len(), "started");
    }
    Ok(Running { graph })
}

/// Refuses a spec file with a duplicate name or id, or a link to a missing node, with every
/// problem of the file: the store would refuse a duplicate on its own, and a file is reported
/// whole.
fn check_file(specs: &[Spec], registry: &Registry, file: Option<&str>) -> anyhow::Result<()> {
    let problems = uniflow_spec::check(specs);
    if problems.is_empty() {
        return Ok(());
    }
    // Compiling reports the check's problems again, with everything else that is wrong.
    let all = Graph::compile(specs.to_vec(), registry, &|_, _| None)
        .err()
        .unwrap_or(Diagnostics(problems));
    Err(placed(all, file))
}

/// The problems, each placed in `file`.
fn placed(problems: Diagnostics, file: Option<&str>) -> anyhow::Error {
    let placed = Diagnostics(problems.0.into_iter().map(|d| d.in_file(file)).collect());
    anyhow::anyhow!("{placed}")
}

impl Running {
    /// Stops every node; listeners finish in-flight requests, for at most `timeout`. Returns
    /// whether everything stopped in time; when not, what is still running is left to end
    /// with the process.
    pub async fn stop(self, timeout: Duration) -> bool {
        if tokio::time::timeout(timeout, self.graph.unload())
            .await
            .is_ok()
        {
            return true;
        }
        tracing::warn!(
            "in-flight requests did not finish within {timeout:?} (shutdown timeout); exiting without them"
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_from(toml: &str) -> anyhow::Result<Config> {
        let dir = std::env::temp_dir().join(format!(
            "uniflow-config-{}-{}",
            std::process::id(),
            toml.len()
        ));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(".uniflow.toml"), toml)?;
        Config::load(&dir)
    }

    #[test]
    fn the_shutdown_timeout_is_read_with_its_unit_and_defaults_to_10s() {
        assert_eq!(
            config_from("").unwrap().shutdown.timeout,
            Duration::from_secs(10)
        );
        assert_eq!(
            config_from("[shutdown]\ntimeout = \"1m30s\"\n")
                .unwrap()
                .shutdown
                .timeout,
            Duration::from_secs(90)
        );
        let err = config_from("[shutdown]\ntimeout = 30\n").unwrap_err();
        assert!(format!("{err:#}").contains("`30` has no unit"), "{err:#}");
    }
}
