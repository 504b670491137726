//! `--cpuprofile` and `--memprofile`, as upstream: a CPU profile sampled while the command runs
//! and a heap profile taken when it ends, both written when the command returns (for `start`,
//! after SIGINT/SIGTERM has stopped the workflow).
//!
//! The CPU profile is a pprof protobuf (`pprof -top uniflow cpu.pb`, `go tool pprof`), or an SVG
//! flame graph when the file name ends in `.svg`. The heap profile comes from jemalloc's sampling
//! profiler as a gzipped pprof protobuf. jemalloc reads its profiling switch from `MALLOC_CONF`
//! only at process start, so `--memprofile` re-executes the binary once with it set.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The environment variable jemalloc reads its options from (unprefixed build).
const MALLOC_CONF: &str = "MALLOC_CONF";
/// Sample an allocation every 2^19 bytes (512 KiB) on average: cheap enough to leave on.
const PROF_CONF: &str = "prof:true,prof_active:true,lg_prof_sample:19";

/// Makes sure jemalloc profiling is on when a heap profile is asked for, by re-executing the
/// process with `MALLOC_CONF` set. Returns only when no re-execution is needed.
///
/// # Errors
/// When the re-execution fails.
pub fn ensure_heap_profiling(memprofile: Option<&Path>) -> anyhow::Result<()> {
    if memprofile.is_none() || std::env::var(MALLOC_CONF).is_ok_and(|c| c.contains("prof:true")) {
        return Ok(());
    }
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the executable to enable heap profiling")?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(MALLOC_CONF, PROF_CONF)
        .exec();
    bail!("re-executing with {MALLOC_CONF}={PROF_CONF} failed: {err}")
}

/// Samples the process's CPU at 99 Hz (as Go's profiler does by default: 100 Hz) until
/// dropped.
fn sampler() -> anyhow::Result<pprof::ProfilerGuard<'static>> {
    pprof::ProfilerGuardBuilder::default()
        .frequency(99)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .context("starting the CPU profiler (is another profile being taken?)")
}

/// A report as a pprof protobuf.
fn encode(report: &pprof::Report) -> anyhow::Result<Vec<u8>> {
    use pprof::protos::Message;
    let profile = report.pprof().context("encoding the CPU profile")?;
    Ok(profile.encode_to_vec())
}

/// A CPU profile of the next `duration`, as a pprof protobuf: what `/debug/pprof/profile`
/// serves.
///
/// # Errors
/// When the profiler cannot start (one profile at a time) or the report cannot be built.
pub async fn cpu_profile(duration: std::time::Duration) -> anyhow::Result<Vec<u8>> {
    // On a thread of its own: the profiler's guard stays where it was made.
    tokio::task::spawn_blocking(move || {
        let guard = sampler()?;
        std::thread::sleep(duration);
        let report = guard.report().build().context("building the CPU profile")?;
        encode(&report)
    })
    .await
    .context("the CPU profile's thread failed")?
}

/// A running CPU profile.
pub struct CpuProfile {
    guard: pprof::ProfilerGuard<'static>,
    path: PathBuf,
}

impl CpuProfile {
    /// Starts sampling at 99 Hz (as Go's profiler does by default: 100 Hz).
    ///
    /// # Errors
    /// When the profiler cannot install its signal handler.
    pub fn start(path: &Path) -> anyhow::Result<CpuProfile> {
        Ok(CpuProfile {
            guard: sampler()?,
            path: path.to_owned(),
        })
    }

    /// Stops sampling and writes the profile.
    ///
    /// # Errors
    /// When the report cannot be built or the file written.
    pub fn finish(self) -> anyhow::Result<()> {
        let report = self
            .guard
            .report()
            .build()
            .context("building the CPU profile")?;
        let file = std::fs::File::create(&self.path)
            .with_context(|| format!("creating {}", self.path.display()))?;
        if self.path.extension().is_some_and(|e| e == "svg") {
            report.flamegraph(file).context("writing the flame graph")?;
        } else {
            let mut file = file;
            std::io::Write::write_all(&mut file, &encode(&report)?)
                .with_context(|| format!("writing {}", self.path.display()))?;
        }
        tracing::info!(file = %self.path.display(), "wrote CPU profile");
        Ok(())
    }
}

/// Writes jemalloc's heap profile (gzipped pprof protobuf).
///
/// # Errors
/// When profiling is off or the dump fails.
pub async fn write_heap_profile(path: &Path) -> anyhow::Result<()> {
    let bytes = heap_profile().await?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(file = %path.display(), "wrote heap profile");
    Ok(())
}

/// jemalloc's heap profile now, as a gzipped pprof protobuf.
///
/// # Errors
/// When profiling is off (the process did not start with it) or the dump fails.
pub async fn heap_profile() -> anyhow::Result<Vec<u8>> {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        bail!(
            "heap profiling is not active ({MALLOC_CONF} lacks prof:true): start with --memprofile FILE, or with {MALLOC_CONF}={PROF_CONF}"
        );
    };
    let mut ctl = ctl.lock().await;
    if !ctl.activated() {
        bail!("heap profiling is not active ({MALLOC_CONF} lacks prof_active:true)");
    }
    ctl.dump_pprof()
        .map_err(|e| anyhow::anyhow!("dumping the heap profile: {e}"))
}
