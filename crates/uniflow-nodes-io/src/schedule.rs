//! `schedule`: a source that starts a process on a schedule, every `interval` or at the times
//! of a `cron` expression (in a `timezone`), and writes `{time, count, skipped}` (or a
//! constant `payload`) to `out`. Our addition: upstream had no timed source (Node-RED's
//! `inject` node is the model).
//!
//! One run at a time: a tick that comes while the previous run is still going is skipped and
//! counted, never queued, so a slow flow cannot pile runs up. Unloading stops the timer at
//! once and waits for the run in progress to finish, its exit's work (a commit) included.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uniflow_core::{
    CompileCx, Cx, Error, Flow, InPort, LoadCx, Node, NodeSpec, OutPort, Packet, Place, Process,
    shape,
};
use uniflow_spec::Diagnostic;
use uniflow_value::{Map, Value};

use crate::lock;

/// The fields of a `schedule` spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Every how long: nanoseconds, or a string such as `"30s"`. The first run is one interval
    /// after the load.
    #[serde(default, deserialize_with = "uniflow_spec::duration::option")]
    pub interval: Option<Duration>,
    /// A cron expression: 5 fields (minute precision) or 6 (seconds first), with `L`, `W`, `#`
    /// and aliases such as `@hourly`.
    #[serde(default)]
    pub cron: Option<String>,
    /// The IANA time zone the `cron` expression reads its times in (`Europe/Paris`); UTC by
    /// default.
    #[serde(default)]
    pub timezone: Option<String>,
    /// What to write instead of `{time, count, skipped}`.
    #[serde(default)]
    pub payload: Option<Value>,
}

/// When the runs are due.
#[derive(Debug, Clone)]
enum When {
    Every(Duration),
    Cron(Box<croner::Cron>, chrono_tz::Tz),
}

impl When {
    /// The first tick after `after`.
    fn next(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            When::Every(every) => Some(after + chrono::Duration::from_std(*every).ok()?),
            When::Cron(cron, zone) => cron
                .find_next_occurrence(&after.with_timezone(zone), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

impl NodeSpec for ScheduleSpec {
    const KIND: &'static str = "schedule";

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let zone = match &self.timezone {
            None => Some(chrono_tz::UTC),
            Some(name) => chrono_tz::Tz::from_str(name)
                .map_err(|_| {
                    problems.push(cx.error(
                        "timezone",
                        format!(
                            "unknown time zone `{name}`: use an IANA name such as Europe/Paris"
                        ),
                    ))
                })
                .ok(),
        };
        let when = match (self.interval, &self.cron) {
            (Some(_), Some(_)) => {
                problems.push(cx.error("cron", "give either `interval` or `cron`, not both"));
                None
            }
            (None, None) => {
                problems.push(cx.error("interval", "missing: give `interval` or `cron`"));
                None
            }
            (Some(every), None) if every.is_zero() => {
                problems.push(cx.error("interval", "must be more than zero"));
                None
            }
            (Some(every), None) => {
                if self.timezone.is_some() {
                    problems
                        .push(cx.error("timezone", "only a `cron` expression reads a time zone"));
                }
                Some(When::Every(every))
            }
            (None, Some(expression)) => match croner::Cron::from_str(expression) {
                Ok(cron) => zone.map(|zone| When::Cron(Box::new(cron), zone)),
                Err(e) => {
                    problems.push(cx.error(
                        "cron",
                        format!("invalid cron expression `{expression}`: {e}"),
                    ));
                    None
                }
            },
        };
        match when {
            Some(when) if problems.is_empty() => Ok(Box::new(ScheduleNode {
                when,
                payload: self.payload,
                place: Place::default(),
                running: Mutex::new(None),
            })),
            _ => Err(problems),
        }
    }
}

/// The compiled `schedule`.
pub struct ScheduleNode {
    when: When,
    payload: Option<Value>,
    /// Where its runs start: set at load, and by a reload that keeps it.
    place: Place,
    /// The timer's task and the sender that stops it, from load to unload.
    running: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

impl Node for ScheduleNode {
    fn in_port(&self, _name: &str) -> Option<InPort> {
        None
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        (name == uniflow_core::port::OUT).then_some(shape::OUT)
    }

    fn handle<'a>(&'a self, _cx: Cx<'a>, _port: InPort, _packet: Packet) -> Flow<'a> {
        Flow::Ready(Packet::None)
    }

    fn load(&self, cx: LoadCx) -> Result<(), Error> {
        self.place.set(cx);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(ticks(
            self.when.clone(),
            self.payload.clone(),
            self.place.clone(),
            stopped,
        ));
        *lock(&self.running) = Some((stop, task));
        Ok(())
    }

    fn moved(&self, cx: LoadCx) {
        self.place.set(cx);
    }

    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let running = lock(&self.running).take();
        Box::pin(async move {
            if let Some((stop, task)) = running {
                // The timer stops now; a run in progress finishes first.
                let _ = stop.send(true);
                let _ = task.await;
            }
            self.place.clear();
        })
    }
}

/// The timer: waits for each tick, runs the flow, and counts the ticks that passed meanwhile.
async fn ticks(
    when: When,
    payload: Option<Value>,
    place: Place,
    mut stopped: watch::Receiver<bool>,
) {
    let (mut count, mut skipped) = (0u64, 0u64);
    let mut last = Utc::now();
    loop {
        let Some(tick) = when.next(last) else {
            tracing::warn!("schedule: the cron expression has no further time; the schedule ends");
            return;
        };
        let wait = (tick - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => return,
        }
        if *stopped.borrow() {
            return;
        }
        count += 1;
        let value = payload.clone().unwrap_or_else(|| {
            Value::Map(Map::from([
                ("count", Value::from(count)),
                ("skipped", Value::from(skipped)),
                (
                    "time",
                    Value::from(tick.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                ),
            ]))
        });
        let Some(place) = place.get() else {
            return;
        };
        run(&place, value).await;
        // Ticks that came while the run went on are skipped, not made up for.
        last = tick;
        let now = Utc::now();
        while let Some(next) = when.next(last).filter(|next| *next <= now) {
            skipped += 1;
            last = next;
        }
        if skipped > 0 && last != tick {
            tracing::debug!(
                skipped,
                "schedule: ticks skipped while a run was still going"
            );
        }
    }
}

/// One run: the payload written to `out` in a process of its own, which ends (its exit's work
/// awaited) before the next tick.
async fn run(place: &LoadCx, value: Value) {
    let proc = Process::new();
    let answer = place.run(&proc, |cx| cx.send(shape::OUT, value)).await;
    let error = answer.value().and_then(Value::as_error).cloned();
    if let Some(e) = &error {
        tracing::warn!(error = %e, "schedule: a run's flow failed");
    }
    if let Err(e) = proc.exit(error).wait().await {
        tracing::warn!(error = %e, "schedule: finishing a run failed");
    }
}
