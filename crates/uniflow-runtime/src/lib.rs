//! A live namespace: what the store holds for it (specs, secrets, charts), compiled into one
//! generation of the graph after another as it changes.
//!
//! [`Live::apply`] takes a [`Snapshot`] of the namespace and makes it the running generation
//! (see [`uniflow_core::Generation`]): unchanged nodes keep running with their state, new and
//! changed ones load beside them, and what the new graph no longer has is unloaded once it
//! serves, each listener after finishing its requests (bounded by [`Options::drain`]). A spec
//! that fails to bind, compile or start keeps its running version, and its problem is logged
//! once. Reloads are serialised; requests never wait for one.
//!
//! [`watch`] keeps a `Live` in step with a [`Store`](uniflow_store::Store): it loads the
//! namespace, then reloads on every batch of changes the store reports.

mod chart;
mod check;
mod metered;
mod observed;
mod secrets;
mod traced;
mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use uniflow_core::agent::Agent;
use uniflow_core::{Build, Generation, Graph, Registry};
use uniflow_spec::{Chart, Diagnostic, Diagnostics, EnvValue, Secret, Spec};
use uniflow_value::Value;

pub use check::{Checked, Links, check, check_charts};
pub use watch::{Error, Watching, snapshot, watch};

use crate::secrets::Secrets;

/// How a namespace runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Env values every spec gets, below its own (`start -e KEY=VALUE`): `{{ .KEY }}` works
    /// without an `env` entry in the spec.
    pub env: Vec<(String, Value)>,
    /// How long a node that a reload retires may take to finish its work (a listener's
    /// in-flight requests) before it is stopped without it.
    pub drain: Duration,
    /// Whether each node counts its packets, errors and answer times (`--admin`).
    pub metered: bool,
    /// Whether each node opens a span for the packets of a traced request
    /// (`[telemetry] otlp_endpoint`).
    pub traced: bool,
    /// What records frames and holds packets at breakpoints (`--debug`, `uniflow test`): the
    /// graph's links get taps (see [`uniflow_core::agent`]).
    pub agent: Option<Arc<Agent>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            env: Vec::new(),
            drain: Duration::from_secs(30),
            metered: false,
            traced: false,
            agent: None,
        }
    }
}

/// What a namespace holds, read at once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Its specs, in the store's order.
    pub specs: Vec<Spec>,
    /// Its secrets.
    pub secrets: Vec<Secret>,
    /// Its charts.
    pub charts: Vec<Chart>,
}

/// What one [`Live::apply`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// Everything wrong with the namespace: specs that failed (they keep their running
    /// version, or stay out), bad links, bad charts.
    pub problems: Diagnostics,
    /// New or changed specs that failed to start; they keep their running version.
    pub failed: Vec<Failure>,
    /// How many specs were compiled anew.
    pub compiled: usize,
    /// How many nodes were retired.
    pub retired: usize,
    /// Whether a new generation was published.
    pub published: bool,
}

/// A new or changed spec that failed to start.
#[derive(Debug)]
pub struct Failure {
    /// The spec's key (see [`uniflow_core::key`]).
    pub key: String,
    /// Why.
    pub error: uniflow_core::Error,
    /// Why, with every secret value masked: what to show.
    pub redacted: String,
}

/// Whether the namespace runs as stored: what `/readyz` tells.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// How many generations were published; 0 until the first load.
    pub generation: u64,
    /// What does not run as stored: specs that failed to bind, compile or start (each keeps
    /// its running version, if any), bad links, charts that include themselves.
    pub not_ready: Vec<NotReady>,
}

/// A spec that does not run as stored, and why (secret values masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// The spec's name (or id, or position).
    pub spec: String,
    /// Why.
    pub why: String,
}

impl Status {
    /// Whether the namespace was loaded and runs as stored.
    pub fn is_ready(&self) -> bool {
        self.generation > 0 && self.not_ready.is_empty()
    }
}

/// A running namespace: see the crate's documentation.
pub struct Live {
    namespace: String,
    registry: Registry,
    options: Options,
    graph: ArcSwap<Graph>,
    status: ArcSwap<Status>,
    /// The secrets of the last load, to mask what is shown of the graph.
    secrets: ArcSwap<Secrets>,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per chart, what its instances were last built from.
    charts: HashMap<String, Value>,
    /// The problems logged already, so a spec that stays broken is logged once.
    reported: HashSet<String>,
    /// Retired nodes being unloaded.
    retiring: Vec<JoinHandle<()>>,
}

impl Live {
    /// A namespace that runs nothing yet.
    pub fn new(namespace: impl Into<String>, registry: Registry, options: Options) -> Live {
        Live {
            namespace: namespace.into(),
            registry,
            options,
            graph: ArcSwap::new(Graph::empty()),
            status: ArcSwap::new(Arc::new(Status::default())),
            secrets: ArcSwap::new(Arc::new(Secrets::default())),
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The graph that runs now.
    pub fn graph(&self) -> Arc<Graph> {
        self.graph.load_full()
    }

    /// `text` with every secret value of the namespace masked, for showing what the graph's
    /// specs hold (their fields are bound, secrets included).
    pub fn redact(&self, text: &str) -> String {
        self.secrets.load().redact(text)
    }

    /// Whether the namespace runs as stored, as of the last reload.
    pub fn status(&self) -> Arc<Status> {
        self.status.load_full()
    }

    /// Makes `snapshot` the running generation: see the crate's documentation.
    pub async fn apply(&self, snapshot: Snapshot) -> Report {
        let mut state = self.state.lock().await;
        state.retiring.retain(|task| !task.is_finished());
        let secrets = Arc::new(Secrets::new(snapshot.secrets));
        let mut registry = self.registry.clone();
        let charts = chart::register(&mut registry, &snapshot.charts, &secrets);
        let shadowed = charts.shadowed;
        let mut problems: Vec<Diagnostic> = charts.cycles;
        let prints = chart::fingerprints(&snapshot.charts, &secrets);
        let stale: HashSet<&String> = prints
            .keys()
            .chain(state.charts.keys())
            .filter(|kind| prints.get(*kind) != state.charts.get(*kind))
            .collect();
        let specs = with_env(snapshot.specs, &self.options.env);
        let previous = self.graph.load_full();
        let lookup = |entry: &EnvValue, namespace: &str| secrets.lookup(entry, namespace);
        let is_stale = |spec: &Spec| stale.contains(&spec.kind);
        let mut report = Report::default();
        let mut held = HashSet::new();
        let namespace = self.namespace.clone();
        let (metered, traced) = (self.options.metered, self.options.traced);
        let observe = move |spec: &Spec, mut node| {
            if metered {
                node = metered::wrap(&namespace, spec, node);
            }
            if traced {
                node = traced::wrap(&namespace, spec, node);
            }
            node
        };
        loop {
            let generation = Generation::build(
                &previous,
                specs.clone(),
                &Build {
                    registry: &registry,
                    secrets: &lookup,
                    stale: &is_stale,
                    held: &held,
                    wrap: (metered || traced).then_some(&observe as &uniflow_core::Wrap),
                    agent: self.options.agent.as_ref(),
                },
            );
            if generation.is_unchanged() {
                problems.extend(generation.problems().0.iter().cloned());
                break;
            }
            let built = generation.problems().0.clone();
            let compiled = generation.compiled().count();
            match generation.start().await {
                Ok((graph, retired)) => {
                    problems.extend(built);
                    report.compiled = compiled;
                    report.retired = retired.len();
                    report.published = true;
                    self.graph.store(graph);
                    if !retired.is_empty() {
                        let drain = self.options.drain;
                        state.retiring.push(tokio::spawn(async move {
                            if tokio::time::timeout(drain, retired.unload()).await.is_err() {
                                tracing::warn!(
                                    "retired nodes did not finish their work within {drain:?}; stopped without it"
                                );
                            }
                        }));
                    }
                    break;
                }
                Err(failed) => {
                    held.insert(failed.key.clone());
                    report.failed.push(Failure {
                        redacted: String::new(),
                        key: failed.key,
                        error: failed.error,
                    });
                }
            }
        }
        state.charts = prints;
        self.secrets.store(Arc::clone(&secrets));
        // What reaches the log or the caller must not quote a secret back.
        for problem in &mut problems {
            problem.message = secrets.redact(&problem.message);
        }
        for failed in &mut report.failed {
            failed.redacted = secrets.redact(&failed.error.to_string());
        }
        // The first load is a generation even when the namespace is empty.
        let before = self.status.load().generation;
        let generation = if before == 0 || report.published {
            before + 1
        } else {
            before
        };
        let not_ready = problems
            .iter()
            .map(|d| NotReady {
                spec: d.spec.clone().unwrap_or_default(),
                why: format!("{}{}", field(&d.path), d.message),
            })
            .chain(report.failed.iter().map(|f| NotReady {
                spec: f.key.clone(),
                why: f.redacted.clone(),
            }))
            .collect();
        self.status.store(Arc::new(Status {
            generation,
            not_ready,
        }));
        metrics::counter!("uniflow_reloads_total").increment(1);
        metrics::counter!("uniflow_reload_failures_total").increment(report.failed.len() as u64);
        metrics::gauge!("uniflow_generation").set(generation as f64);
        metrics::gauge!("uniflow_nodes").set(self.graph.load().symbols().len() as f64);
        problems.extend(shadowed);
        self.log(&mut state, &problems, &report);
        report.problems = Diagnostics(problems);
        report
    }

    /// Logs what is newly wrong, and what changed.
    fn log(&self, state: &mut State, problems: &[Diagnostic], report: &Report) {
        let namespace = &self.namespace;
        let now: HashSet<String> = problems.iter().map(ToString::to_string).collect();
        for problem in &now {
            if !state.reported.contains(problem) {
                tracing::error!(%namespace, "not loaded: {problem}");
            }
        }
        for failed in &report.failed {
            tracing::error!(
                %namespace,
                "not started: {}; its running version, if any, keeps serving",
                failed.redacted
            );
        }
        state.reported = now;
        if report.published {
            tracing::info!(
                %namespace,
                nodes = self.graph.load().symbols().len(),
                compiled = report.compiled,
                retired = report.retired,
                "loaded a new generation"
            );
        }
    }

    /// Stops every node; retired ones still finishing are waited for too. Returns whether
    /// everything stopped within `timeout`; what did not is left to end with the process.
    pub async fn stop(&self, timeout: Duration) -> bool {
        let graph = self.graph.swap(Graph::empty());
        let retiring = std::mem::take(&mut self.state.lock().await.retiring);
        tokio::time::timeout(timeout, async move {
            graph.unload().await;
            for task in retiring {
                let _ = task.await;
            }
        })
        .await
        .is_ok()
    }
}

/// `field `path`: ` for a diagnostic's path, or nothing for the whole spec.
fn field(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("field `{path}`: ")
    }
}

/// `specs`, each with `env`'s values below its own.
fn with_env(mut specs: Vec<Spec>, env: &[(String, Value)]) -> Vec<Spec> {
    if env.is_empty() {
        return specs;
    }
    for spec in &mut specs {
        for (key, value) in env {
            // The last entry that resolves wins, so the first place is the lowest priority.
            spec.env.entry(key.clone()).or_default().insert(
                0,
                EnvValue {
                    id: None,
                    name: None,
                    value: value.clone(),
                },
            );
        }
    }
    specs
}

#[cfg(test)]
mod tests;
