//! `schedule` on the real clock, with generous bounds: a loaded two-core machine delays
//! timers, so the tests assert what must hold however late the ticks come.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use uniflow_core::shape::{OneToOne, Transform};
use uniflow_core::{Cx, Graph, Node, Registry};
use uniflow_spec::{Format, parse};
use uniflow_value::{ErrorValue, Value};

/// What a `collect` node saw, in order.
type Seen = Arc<Mutex<Vec<Value>>>;

#[derive(Deserialize)]
struct CollectSpec {}

struct Collect(Seen);

impl Transform for Collect {
    fn transform(&self, _cx: &Cx<'_>, input: Value) -> Result<Value, ErrorValue> {
        self.0.lock().unwrap().push(input.clone());
        Ok(input)
    }
}

/// Loads `yaml` with the IO kinds, the core's test kinds, and `collect` nodes named `start`
/// and `end` that record what reaches them.
async fn load(yaml: &str) -> (Arc<Graph>, Seen, Seen) {
    let (start, end): (Seen, Seen) = Default::default();
    let mut r = Registry::new();
    uniflow_nodes_io::register(&mut r);
    uniflow_core::testing::register(&mut r);
    for (kind, seen) in [("collect-start", &start), ("collect-end", &end)] {
        let seen = Arc::clone(seen);
        r.add_with(kind, move |_: CollectSpec, _| {
            Ok(Box::new(OneToOne(Collect(Arc::clone(&seen)))) as Box<dyn Node>)
        });
    }
    let graph = Graph::compile(parse(yaml, Format::Yaml, None).unwrap(), &r, &|_, _| None)
        .unwrap_or_else(|d| panic!("{d}"));
    graph.load().await.unwrap();
    (graph, start, end)
}

fn counts(seen: &Seen) -> Vec<i64> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|v| v.get("count").and_then(Value::as_i64).unwrap())
        .collect()
}

const CHAIN: &str = "
- {kind: collect-start, name: start, ports: {out: [{name: work, port: in}]}}
- {kind: test-delay, name: work, millis: DELAY, ports: {out: [{name: end, port: in}]}}
- {kind: collect-end, name: end}
";

fn chain(schedule: &str, delay_ms: u64) -> String {
    format!(
        "- {{kind: schedule, name: s, {schedule}, ports: {{out: [{{name: start, port: in}}]}}}}\n{}",
        CHAIN.replace("DELAY", &delay_ms.to_string())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_are_counted_over_a_bounded_time() {
    let (graph, _, end) = load(&chain("interval: 20ms", 0)).await;
    let began = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    graph.unload().await;
    let elapsed = began.elapsed();
    let seen = end.lock().unwrap().clone();
    let counts = counts(&end);
    // Numbered from 1 with no gap; never more runs than ticks could fit, and some ran.
    assert!(counts.len() >= 3, "{counts:?}");
    assert_eq!(counts, (1..=counts.len() as i64).collect::<Vec<_>>());
    let last = seen.last().unwrap();
    let skipped = last.get("skipped").and_then(Value::as_i64).unwrap();
    let ticks = counts.len() as i64 + skipped;
    assert!(
        ticks <= elapsed.as_millis() as i64 / 20 + 2,
        "{ticks} ticks in {elapsed:?}"
    );
    let time = last.get("time").and_then(Value::as_str).unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_that_come_during_a_run_are_skipped_not_piled_up() {
    let (graph, start, end) = load(&chain("interval: 10ms", 150)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    graph.unload().await;
    let runs = counts(&end);
    // Each run took 150 ms against a 10 ms interval: at most one run per 150 ms, and the
    // ticks in between are counted as skipped.
    assert!(!runs.is_empty() && runs.len() <= 8, "{runs:?}");
    assert_eq!(
        counts(&start),
        runs,
        "every run that started finished, one at a time"
    );
    let skipped: Vec<i64> = end
        .lock()
        .unwrap()
        .iter()
        .map(|v| v.get("skipped").and_then(Value::as_i64).unwrap())
        .collect();
    assert!(skipped.windows(2).all(|w| w[0] < w[1]), "{skipped:?}");
    assert!(
        skipped.last().copied().unwrap_or(0) >= 5 || runs.len() == 1,
        "{skipped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_stops_the_timer_and_finishes_the_run_in_progress() {
    let (graph, start, end) = load(&chain("interval: 10ms", 300)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while start.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no run started in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    graph.unload().await;
    // The run that had started finished before unload returned, and none starts after.
    assert_eq!(counts(&end), counts(&start));
    let after = counts(&start).len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(counts(&start).len(), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_ticks_on_whole_seconds_in_its_zone_and_a_constant_payload_is_written() {
    let (graph, _, end) = load(
        "
- {kind: schedule, name: s, cron: '* * * * * *', timezone: Asia/Kolkata, ports: {out: [{name: end, port: in}]}}
- {kind: schedule, name: c, interval: 50ms, payload: {job: sweep}, ports: {out: [{name: end, port: in}]}}
- {kind: collect-end, name: end}
",
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = end.lock().unwrap().clone();
        let ticked = seen
            .iter()
            .find_map(|v| v.get("time").and_then(Value::as_str).map(str::to_owned));
        // The cron may tick before the interval's first 50 ms are up, so both are awaited.
        let swept = seen
            .iter()
            .any(|v| v.get("job").and_then(Value::as_str) == Some("sweep"));
        if let (Some(time), true) = (ticked, swept) {
            let at = chrono::DateTime::parse_from_rfc3339(&time).unwrap();
            assert_eq!(at.timestamp_subsec_nanos(), 0, "{time}");
            assert!(time.ends_with('Z'), "{time}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no cron tick and constant payload in 30 s: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    graph.unload().await;
}
