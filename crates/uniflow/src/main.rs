//! `uniflow`: run workflows declared in YAML specs.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use uniflow::profile::{CpuProfile, ensure_heap_profiling, write_heap_profile};
use uniflow::resources::{self, Output, Selection};
use uniflow::{Config, StartOptions, start};
use uniflow_core::agent::Agent;
use uniflow_spec::ResourceKind;

// jemalloc: a fast allocator for many small cross-thread allocations, and the one whose
// sampling profiler backs `--memprofile`. The benchmark baseline uses it too, so comparisons
// measure the engine, not the allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "uniflow", version, about = "A universal workflow engine")]
struct Cli {
    /// Write a CPU profile (pprof protobuf, or an SVG flame graph for `.svg`) when the command
    /// ends.
    #[arg(long, global = true, value_name = "FILE")]
    cpuprofile: Option<PathBuf>,
    /// Write a heap profile (gzipped pprof protobuf) when the command ends.
    #[arg(long, global = true, value_name = "FILE")]
    memprofile: Option<PathBuf>,
    /// `text` (for people) or `json` (one object per line, for log collectors).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a namespace from the store and follow its changes until SIGINT or SIGTERM.
    Start {
        #[command(flatten)]
        load: Load,
        /// How long to wait after SIGINT or SIGTERM for in-flight requests before exiting
        /// without them, e.g. `30s` [default: `[shutdown] timeout` of .uniflow.toml, else 10s].
        #[arg(long, value_name = "DURATION", value_parser = uniflow::parse_timeout)]
        shutdown_timeout: Option<Duration>,
        /// Serve the operator endpoint (/healthz, /readyz, /metrics, /debug/pprof) on this
        /// address, e.g. 127.0.0.1:9400 [default: `[admin] address`, else off].
        #[arg(long, value_name = "ADDRESS")]
        admin: Option<String>,
        /// Open the debugger's prompt `(debug) ` on the terminal: breakpoints on nodes and
        /// ports, and the frames packets leave (see docs/debugging.md).
        #[arg(long)]
        debug: bool,
    },
    /// Load a namespace as `start` does (listeners listen), run its `test` nodes whose
    /// `namespace/name` matches REGEX (all without one), all at once, and report each; exit 1
    /// when any failed.
    Test {
        /// Only the suites whose `namespace/name` this regular expression matches.
        regex: Option<String>,
        #[command(flatten)]
        load: Load,
        /// Also write the results as JUnit XML to this file, for CI.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Check a file of resources and store it (upsert by id, else by name); running
    /// instances reload.
    Apply {
        /// `specs` (or `nodes`), `secrets` or `charts`.
        #[arg(value_parser = resources::parse_kind)]
        kind: ResourceKind,
        /// The YAML or JSON file (one resource or a list).
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
        /// The namespace of resources that name none.
        #[arg(short, long, default_value = uniflow_spec::DEFAULT_NAMESPACE)]
        namespace: String,
        /// Check and print, but store nothing.
        #[arg(long)]
        dry_run: bool,
        /// `table`, `json` or `yaml`.
        #[arg(short, long, default_value = "table")]
        output: Output,
    },
    /// Print the namespace's resources of a kind, or the named ones.
    Get {
        /// `specs` (or `nodes`), `secrets` or `charts`.
        #[arg(value_parser = resources::parse_kind)]
        kind: ResourceKind,
        /// Only these names.
        names: Vec<String>,
        /// The namespace.
        #[arg(short, long, default_value = uniflow_spec::DEFAULT_NAMESPACE)]
        namespace: String,
        /// `table` (secret data masked), `json` or `yaml` (what `apply -f` reads back).
        #[arg(short, long, default_value = "table")]
        output: Output,
    },
    /// Delete named resources, those a file lists, or all of a kind in the namespace.
    Delete {
        /// `specs` (or `nodes`), `secrets` or `charts`.
        #[arg(value_parser = resources::parse_kind)]
        kind: ResourceKind,
        /// The names to delete.
        #[arg(conflicts_with_all = ["file", "all"])]
        names: Vec<String>,
        /// Delete what this file lists (by id, else by name).
        #[arg(short, long, value_name = "FILE", conflicts_with = "all")]
        file: Option<PathBuf>,
        /// Delete every resource of the kind in the namespace.
        #[arg(long)]
        all: bool,
        /// The namespace.
        #[arg(short, long, default_value = uniflow_spec::DEFAULT_NAMESPACE)]
        namespace: String,
        /// `table`, `json` or `yaml`.
        #[arg(short, long, default_value = "table")]
        output: Output,
    },
}

/// What `start` and `test` load, and how.
#[derive(clap::Args)]
struct Load {
    /// The namespace to run.
    #[arg(short, long, default_value = uniflow_spec::DEFAULT_NAMESPACE)]
    namespace: String,
    /// A YAML or JSON file of specs to apply first (checked whole); may be repeated (a flow,
    /// then its tests), and the files are checked together.
    #[arg(long, value_name = "FILE")]
    from_specs: Vec<PathBuf>,
    /// A YAML or JSON file of secrets to apply first.
    #[arg(long, value_name = "FILE")]
    from_secrets: Option<PathBuf>,
    /// A YAML or JSON file of charts to apply first.
    #[arg(long, value_name = "FILE")]
    from_charts: Option<PathBuf>,
    /// An env value every spec gets, below its own env (`{{ .KEY }}` works without an `env`
    /// entry); may be repeated.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = uniflow::parse_env)]
    env: Vec<(String, String)>,
}

impl Load {
    /// `start`'s options, recording with `agent` if given.
    fn options(self, agent: Option<Arc<Agent>>) -> StartOptions {
        StartOptions {
            namespace: self.namespace,
            from_specs: self.from_specs,
            from_secrets: self.from_secrets,
            from_charts: self.from_charts,
            env: self.env,
            agent,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = ensure_heap_profiling(cli.memprofile.as_deref()) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // PostgreSQL's notices (a migration's `IF NOT EXISTS` skipping a table) are the
        // server talking to itself, not news for the person at the terminal.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        // Colour codes only for a person at a terminal: in a file or a pipe they are noise.
        logs.with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // What a shutdown timeout left running must not hold the exit up.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the limit on open files for a server (see `uniflow::limits`), and says when it
/// stays low enough to cap the connections the server can hold.
fn open_files() {
    match uniflow::limits::raise_open_files() {
        Ok(limits) => {
            if limits.before != limits.now {
                tracing::debug!(before = ?limits.before, now = ?limits.now, "raised the open files limit");
            }
            if let Some(now) = limits.now.filter(|n| *n < uniflow::limits::FEW) {
                tracing::warn!(
                    "the open files limit is {now}: the server holds fewer connections at once than that; raise the hard limit (`ulimit -Hn`, `LimitNOFILE=` in a systemd unit) to serve more"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cpu = cli
        .cpuprofile
        .as_deref()
        .map(CpuProfile::start)
        .transpose()?;
    let result = command(cli.command).await;
    // Profiles are written however the command ended, so a failing run can be profiled too.
    if let Some(cpu) = cpu {
        cpu.finish()?;
    }
    if let Some(path) = &cli.memprofile {
        write_heap_profile(path).await?;
    }
    result
}

async fn command(command: Command) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&std::env::current_dir()?)?;
    let printed = match command {
        Command::Start {
            load,
            shutdown_timeout,
            admin,
            debug,
        } => {
            if let Some(timeout) = shutdown_timeout {
                config.shutdown.timeout = timeout;
            }
            if admin.is_some() {
                config.admin.address = admin;
            }
            open_files();
            let agent = debug.then(Agent::new);
            let running = start(&config, &load.options(agent.clone())).await?;
            match agent {
                Some(agent) => {
                    let stop = async {
                        // A signal that cannot be listened for leaves only the prompt to stop.
                        if shutdown_signal().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    };
                    uniflow::debug::run(&running, agent, stop).await?;
                }
                None => shutdown_signal().await?,
            }
            let timeout = config.shutdown.timeout;
            tracing::info!("stopping: finishing in-flight requests (at most {timeout:?})");
            if running.stop(timeout).await {
                tracing::info!("stopped");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Test { regex, load, junit } => {
            let filter = regex
                .as_deref()
                .map(regex::Regex::new)
                .transpose()
                .context("reading the suites' REGEX")?;
            // Frames are recorded for `assert`'s `target`.
            let running = start(&config, &load.options(Some(Agent::new()))).await?;
            let outcomes = uniflow::suites::run(&running, filter.as_ref(), |outcome| {
                println!("{}", outcome.lines());
            })
            .await;
            running.stop(config.shutdown.timeout).await;
            if let Some(path) = junit {
                std::fs::write(&path, uniflow::suites::junit(&outcomes))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            let failed = outcomes.iter().any(|o| o.error.is_some());
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        Command::Apply {
            kind,
            file,
            namespace,
            dry_run,
            output,
        } => resources::apply(&config, kind, &file, &namespace, dry_run, output).await?,
        Command::Get {
            kind,
            names,
            namespace,
            output,
        } => resources::get(&config, kind, &names, &namespace, output).await?,
        Command::Delete {
            kind,
            names,
            file,
            all,
            namespace,
            output,
        } => {
            let selection = match (file, all) {
                (Some(file), _) => Selection::File(file),
                (None, true) => Selection::All,
                (None, false) if !names.is_empty() => Selection::Names(names),
                (None, false) => anyhow::bail!(
                    "say what to delete: names, -f FILE, or --all for every {} of the namespace",
                    kind.singular()
                ),
            };
            resources::delete(&config, kind, &selection, &namespace, output).await?
        }
    };
    for warning in &printed.warnings {
        eprintln!("{warning}");
    }
    if !printed.out.is_empty() {
        println!("{}", printed.out.trim_end_matches('\n'));
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
