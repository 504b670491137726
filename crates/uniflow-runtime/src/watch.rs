//! Keeping a [`Live`] namespace in step with its store.
//!
//! The watch starts before the first load, so no change falls between the two. Changes that
//! arrive together (one `apply`, or several within [`SETTLE`]) make one generation. A store
//! that fails while the namespace runs (PostgreSQL lost) leaves the running generation
//! serving; the load is retried with a growing pause, and the reload that follows catches up
//! with everything that changed meanwhile.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use uniflow_spec::{Chart, Secret, Spec};
use uniflow_store::{Change, Example, Store};

use crate::{Live, Report, Snapshot};

/// How long a reload waits for more changes after one arrives: an `apply` of many resources
/// reaches the watch as one event per resource.
const SETTLE: Duration = Duration::from_millis(20);

/// The longest a reload waits for more changes while they keep coming, so a steady stream
/// of changes still reaches the running graph.
const SETTLE_AT_MOST: Duration = Duration::from_millis(200);

/// Why a namespace could not be watched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] uniflow_store::Error),
}

/// A namespace kept in step with its store; dropping it does not stop the watch (see
/// [`Watching::stop`]).
pub struct Watching {
    task: JoinHandle<()>,
}

impl Watching {
    /// Stops following the store; the running generation keeps running.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Loads the namespace of `live` from `store` and keeps reloading it as it changes. Returns
/// the first load's report with the watch.
///
/// # Errors
/// When the store cannot be watched or read at the start.
pub async fn watch(store: Store, live: Arc<Live>) -> Result<(Report, Watching), Error> {
    let namespace = live.namespace().to_owned();
    let mut changes = store.watch(Some(&namespace)).await?;
    let first = live.apply(snapshot(&store, &namespace).await?).await;
    let task = tokio::spawn(async move {
        while let Some(change) = changes.next().await {
            // Gather what arrives together into one reload, and when the oldest was written.
            let mut oldest = written(&change);
            let started = tokio::time::Instant::now();
            while started.elapsed() < SETTLE_AT_MOST {
                match tokio::time::timeout(SETTLE, changes.next()).await {
                    Ok(Some(change)) => oldest = earlier(oldest, written(&change)),
                    Ok(None) | Err(_) => break,
                }
            }
            let snapshot = load_until_it_works(&store, &namespace).await;
            live.apply(snapshot).await;
            if let Some(lag) = oldest.and_then(|t| SystemTime::now().duration_since(t).ok()) {
                metrics::histogram!("uniflow_watch_lag_seconds").record(lag.as_secs_f64());
            }
        }
        tracing::warn!(%namespace, "the store closed its change stream; no more reloads");
    });
    Ok((first, Watching { task }))
}

/// When `change` was written to the store, if the store says. A resync says nothing.
fn written(change: &Change) -> Option<SystemTime> {
    match change {
        Change::Event(event) => event.written,
        _ => None,
    }
}

/// The earlier of two times, either of which may be unknown.
fn earlier(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Everything the namespace holds now.
///
/// # Errors
/// When the store fails.
pub async fn snapshot(store: &Store, namespace: &str) -> Result<Snapshot, uniflow_store::Error> {
    let examples = [Example::in_namespace(namespace)];
    Ok(Snapshot {
        specs: store.load::<Spec>(&examples).await?,
        secrets: store.load::<Secret>(&examples).await?,
        charts: store.load::<Chart>(&examples).await?,
    })
}

/// [`snapshot`], retried with a growing pause (up to 5 s) while the store fails.
async fn load_until_it_works(store: &Store, namespace: &str) -> Snapshot {
    let mut pause = Duration::from_millis(100);
    loop {
        match snapshot(store, namespace).await {
            Ok(snapshot) => return snapshot,
            Err(e) => {
                metrics::counter!("uniflow_store_errors_total").increment(1);
                tracing::error!(
                    %namespace,
                    error = %e,
                    "cannot read the store; the running generation keeps serving, retrying in {pause:?}"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
