//! The `uniflow` command's library half: configuration, the registry of every node kind, the
//! `start` sequence and the `apply`, `get` and `delete` verbs. `main.rs` only parses flags and
//! reports errors; tests drive the same functions.

pub mod debug;
pub mod limits;
pub mod operator;
pub mod profile;
pub mod resources;
pub mod suites;
pub mod table;
pub mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use uniflow_core::agent::Agent;
use uniflow_core::{Graph, Registry};
use uniflow_lang::Languages;
use uniflow_runtime::{Links, Live, Watching};
use uniflow_spec::{Diagnostic, Diagnostics};
use uniflow_store::Store;
use uniflow_value::Value;

/// Every node kind this build knows but the system kinds, which need a store (see
/// [`registry_with_system`]).
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    uniflow_nodes_control::register(&mut registry, Arc::new(Languages::default()));
    uniflow_nodes_net::register(&mut registry);
    uniflow_nodes_io::register(&mut registry);
    registry
}

/// Every node kind, the system kinds (`native`, `signal`) included, working on `store` for the
/// runtime's `namespace`.
pub fn registry_with_system(store: &Store, namespace: &str) -> Registry {
    let mut registry = registry();
    uniflow_nodes_system::register(
        &mut registry,
        uniflow_nodes_system::System {
            store: store.clone(),
            namespace: namespace.to_owned(),
        },
    );
    registry
}

/// Settings from `.uniflow.toml`, overridden by `UNIFLOW_<SECTION>_<KEY>` variables.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Config {
    /// `[database]`.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// `[shutdown]`.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// `[admin]`: the operator endpoint.
    #[serde(default)]
    pub admin: operator::AdminConfig,
    /// `[telemetry]`: traces.
    #[serde(default)]
    pub telemetry: telemetry::TelemetryConfig,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `mem://` (the default: inside this process), `sqlite://PATH` (a file several processes
    /// may share) or `postgres://...` (a database several machines may share).
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
            // The first `_` parts section from key, so `UNIFLOW_TELEMETRY_OTLP_ENDPOINT` is
            // `[telemetry] otlp_endpoint`.
            .merge(Env::prefixed("UNIFLOW_").map(|key| key.as_str().replacen('_', ".", 1).into()))
            .extract()
            .with_context(|| {
                format!(
                    "reading configuration ({} and UNIFLOW_* variables)",
                    file.display()
                )
            })?;
        Ok(config)
    }
}

/// What `start` needs.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The namespace to run.
    pub namespace: String,
    /// Spec files to apply before starting, checked together (a test file may link to the
    /// flow it tests).
    pub from_specs: Vec<PathBuf>,
    /// A secret file to apply before starting.
    pub from_secrets: Option<PathBuf>,
    /// A chart file to apply before starting.
    pub from_charts: Option<PathBuf>,
    /// `-e KEY=VALUE`: env values every spec gets, below its own.
    pub env: Vec<(String, String)>,
    /// What records frames and holds packets at breakpoints (`--debug`, `uniflow test`), if
    /// anything.
    pub agent: Option<Arc<Agent>>,
}

/// Reads `-e KEY=VALUE`.
///
/// # Errors
/// No `=`, or an empty key.
pub fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        Some(_) => Err(format!("`{text}` has no key before `=`")),
        None => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// A running namespace, kept in step with its store.
pub struct Running {
    live: Arc<Live>,
    watching: Watching,
    operator: Option<operator::Operator>,
    telemetry: Option<telemetry::Telemetry>,
}

/// Opens the store, applies the files (as `apply` does, after checking them whole), then runs
/// the namespace and follows its changes.
///
/// # Errors
/// A store that cannot be opened; every problem in the files (with file, spec and field); a
/// node of the first generation that cannot start.
pub async fn start(config: &Config, options: &StartOptions) -> anyhow::Result<Running> {
    let admin = operator::address(&config.admin)?;
    // Before anything loads: a counter made while no exporter is installed stays a no-op.
    let metrics = admin.map(|_| operator::install_metrics()).transpose()?;
    let namespace = options.namespace.as_str();
    let telemetry = telemetry::install(&config.telemetry, namespace)?;
    let store = open_store(config).await?;
    let registry = registry_with_system(&store, namespace);
    let env: Vec<(String, Value)> = options
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect();
    apply_files(&store, &registry, options, &env).await?;
    let live = Arc::new(Live::new(
        namespace,
        registry,
        uniflow_runtime::Options {
            env,
            metered: admin.is_some(),
            traced: telemetry.is_some(),
            agent: options.agent.clone(),
            ..uniflow_runtime::Options::default()
        },
    ));
    let (report, watching) = uniflow_runtime::watch(store, Arc::clone(&live))
        .await
        .context("reading the namespace from the store")?;
    if let Some(failed) = report.failed.into_iter().next() {
        watching.stop();
        live.stop(Duration::from_secs(10)).await;
        return Err(anyhow::anyhow!(
            "starting the workflow: {}",
            failed.redacted
        ));
    }
    let operator = match (admin, metrics) {
        (Some(address), Some(metrics)) => Some(
            operator::serve(
                address,
                config.admin.token.clone(),
                Arc::clone(&live),
                metrics,
            )
            .await?,
        ),
        _ => None,
    };
    let graph = live.graph();
    if graph.symbols().is_empty() {
        // Not an error: a store filled while the namespace runs is a valid way to start.
        tracing::warn!(
            %namespace,
            "namespace `{namespace}` has no specs yet: nothing is served until some are applied"
        );
    } else {
        tracing::info!(%namespace, nodes = graph.symbols().len(), "started");
    }
    Ok(Running {
        live,
        watching,
        operator,
        telemetry,
    })
}

/// Opens the store `database.url` names.
///
/// # Errors
/// When it cannot be opened.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(config.database.url.trim())
        .await
        .context("opening the store (database.url)")
}

/// Applies `start`'s files: secrets and charts first, so the specs are checked against them.
/// The spec file is checked whole, dangling links included; nothing is stored when anything is
/// wrong.
async fn apply_files(
    store: &Store,
    registry: &Registry,
    options: &StartOptions,
    env: &[(String, Value)],
) -> anyhow::Result<()> {
    if options.from_specs.is_empty()
        && options.from_secrets.is_none()
        && options.from_charts.is_none()
    {
        // Nothing to check against the store, so no read of it before the runtime's own.
        return Ok(());
    }
    let namespace = options.namespace.as_str();
    fn read<R>(
        path: &Path,
        namespace: &str,
        what: fn(&Path, &str) -> Result<Vec<R>, Diagnostics>,
    ) -> anyhow::Result<Vec<R>> {
        what(path, namespace).map_err(|d| anyhow::anyhow!("{d}"))
    }
    let secrets = options
        .from_secrets
        .as_ref()
        .map(|p| read(p, namespace, uniflow_spec::load_secrets_file))
        .transpose()?;
    let charts = options
        .from_charts
        .as_ref()
        .map(|p| read(p, namespace, uniflow_spec::load_charts_file))
        .transpose()?;
    // Per spec, the file it came from, to place its problems.
    let mut files = Vec::new();
    let mut specs = None;
    for path in &options.from_specs {
        let read = read(path, namespace, uniflow_spec::load_file)?;
        files.extend(read.iter().map(|_| path.display().to_string()));
        specs.get_or_insert_with(Vec::new).extend(read);
    }
    let mut around = uniflow_runtime::snapshot(store, namespace)
        .await
        .context("reading the namespace from the store")?;
    around.secrets.extend(secrets.iter().flatten().cloned());
    if let Some(charts) = &charts {
        let checked = uniflow_runtime::check_charts(registry, charts, &around.charts);
        let file = options
            .from_charts
            .as_ref()
            .map(|p| p.display().to_string());
        warn_all(&checked.warnings, file.as_deref());
        if !checked.errors.is_empty() {
            return Err(placed(checked.errors, file.as_deref()));
        }
        around.charts.extend(charts.iter().cloned());
    }
    if let Some(specs) = &specs {
        let checked = uniflow_runtime::check(registry, specs, &around, env, Links::Within);
        let file_of = |d: Diagnostic| {
            // Diagnostics name a spec by its label (name, else id, else position).
            let file = specs
                .iter()
                .enumerate()
                .position(|(i, s)| d.spec.as_deref() == Some(s.label(i).as_str()))
                .and_then(|i| files.get(i));
            let file = file.or(files.first()).map(String::as_str);
            d.in_file(file)
        };
        for warning in &checked.warnings {
            tracing::warn!("{}", file_of(warning.clone()));
        }
        if !checked.errors.is_empty() {
            let placed = Diagnostics(checked.errors.0.into_iter().map(file_of).collect());
            return Err(anyhow::anyhow!("{placed}"));
        }
    }
    for (path, applied) in [
        (&options.from_secrets, apply_some(store, secrets).await?),
        (&options.from_charts, apply_some(store, charts).await?),
    ] {
        if let Some(path) = path {
            tracing::info!(file = %path.display(), resources = applied, "applied");
        }
    }
    let applied = apply_some(store, specs).await?;
    if !options.from_specs.is_empty() {
        tracing::info!(
            files = options.from_specs.len(),
            resources = applied,
            "applied specs"
        );
    }
    Ok(())
}

async fn apply_some<R: uniflow_spec::Resource>(
    store: &Store,
    items: Option<Vec<R>>,
) -> anyhow::Result<usize> {
    let Some(items) = items else { return Ok(0) };
    let applied = store
        .apply(items)
        .await
        .with_context(|| format!("applying {}", R::KIND))?;
    Ok(applied.len())
}

/// Logs each warning, placed in `file`.
fn warn_all(warnings: &[Diagnostic], file: Option<&str>) {
    for warning in warnings {
        tracing::warn!("{}", warning.clone().in_file(file));
    }
}

/// The problems, each placed in `file`.
pub(crate) fn placed(problems: Diagnostics, file: Option<&str>) -> anyhow::Error {
    let placed = Diagnostics(problems.0.into_iter().map(|d| d.in_file(file)).collect());
    anyhow::anyhow!("{placed}")
}

impl Running {
    /// The graph that runs now.
    pub fn graph(&self) -> Arc<Graph> {
        self.live.graph()
    }

    /// `text` with every secret value of the namespace masked, for showing what the graph's
    /// specs and packets hold.
    pub fn redact(&self, text: &str) -> String {
        self.live.redact(text)
    }

    /// Where the operator endpoint listens, when it is on.
    pub fn admin_address(&self) -> Option<std::net::SocketAddr> {
        self.operator.as_ref().map(operator::Operator::address)
    }

    /// Stops following the store and stops every node; listeners finish in-flight requests,
    /// for at most `timeout`. Returns whether everything stopped in time; when not, what is
    /// still running is left to end with the process.
    pub async fn stop(self, timeout: Duration) -> bool {
        drop(self.operator);
        self.watching.stop();
        let stopped = self.live.stop(timeout).await;
        if !stopped {
            tracing::warn!(
                "in-flight requests did not finish within {timeout:?} (shutdown timeout); exiting without them"
            );
        }
        if let Some(telemetry) = self.telemetry {
            telemetry.shutdown().await;
        }
        stopped
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

    #[test]
    fn telemetry_is_off_by_default_and_read_from_its_section() {
        let config = config_from("").unwrap();
        assert_eq!(config.telemetry.otlp_endpoint, None);
        assert!((config.telemetry.sample_ratio - 1.0).abs() < f64::EPSILON);
        let config = config_from(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 0.25\n",
        )
        .unwrap();
        assert_eq!(
            config.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert!((config.telemetry.sample_ratio - 0.25).abs() < f64::EPSILON);
    }
}
