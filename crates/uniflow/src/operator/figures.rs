//! The figures the graph page shows per node, read from the metrics exporter's text: so the page
//! and `/metrics` tell the same numbers, and nothing is counted twice.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};

/// What the last event said, to turn totals into rates and recent answer times.
#[derive(Default)]
pub(super) struct Totals {
    at: Option<Instant>,
    nodes: BTreeMap<String, Node>,
}

#[derive(Default, Clone)]
struct Node {
    packets: f64,
    errors: f64,
    /// The latency histogram's cumulative buckets: (upper bound in seconds, count).
    buckets: Vec<(f64, f64)>,
}

impl Totals {
    /// Per node: packets per second since the last call, the totals, and p50/p99 of the answers
    /// since then (of all answers when none came since).
    pub(super) fn next(&mut self, metrics: &str) -> Value {
        let now = Instant::now();
        let seconds = self
            .at
            .map_or(0.0, |at| now.duration_since(at).as_secs_f64());
        let nodes = parse(metrics);
        let mut out = serde_json::Map::new();
        for (name, node) in &nodes {
            let before = self.nodes.get(name);
            let rate = match before {
                Some(b) if seconds > 0.0 => ((node.packets - b.packets) / seconds).max(0.0),
                _ => 0.0,
            };
            let recent: Vec<(f64, f64)> = match before {
                Some(b) if b.buckets.len() == node.buckets.len() => node
                    .buckets
                    .iter()
                    .zip(&b.buckets)
                    .map(|((le, now), (_, then))| (*le, now - then))
                    .collect(),
                _ => node.buckets.clone(),
            };
            let recent = if recent.last().is_some_and(|(_, n)| *n > 0.0) {
                recent
            } else {
                node.buckets.clone()
            };
            out.insert(
                name.clone(),
                json!({
                    "rate": rate.round(),
                    "packets": node.packets,
                    "errors": node.errors,
                    "p50": quantile(&recent, 0.5),
                    "p99": quantile(&recent, 0.99),
                }),
            );
        }
        self.at = Some(now);
        self.nodes = nodes;
        Value::Object(out)
    }
}

/// The per-node series of the exporter's text.
fn parse(text: &str) -> BTreeMap<String, Node> {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some(name) = label(series, "node") else {
            continue;
        };
        let node = nodes.entry(name.to_owned()).or_default();
        if series.starts_with("uniflow_node_packets_total{") {
            node.packets = value;
        } else if series.starts_with("uniflow_node_errors_total{") {
            node.errors = value;
        } else if series.starts_with("uniflow_node_latency_seconds_bucket{")
            && let Some(le) = label(series, "le")
        {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            node.buckets.push((le, value));
        }
    }
    nodes
}

/// The value of label `key` in a series such as `name{a="1",b="2"}`.
fn label<'t>(series: &'t str, key: &str) -> Option<&'t str> {
    let start = series.find(&format!("{key}=\""))? + key.len() + 2;
    let len = series[start..].find('"')?;
    Some(&series[start..start + len])
}

/// The upper bound of the bucket where the `q` quantile falls, written for people (`≤1ms`), or
/// null without answers.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Value {
    let Some(&(_, total)) = buckets.last() else {
        return Value::Null;
    };
    if total <= 0.0 {
        return Value::Null;
    }
    let bound = buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map_or(f64::INFINITY, |(le, _)| *le);
    Value::from(if bound.is_infinite() {
        ">10s".to_owned()
    } else if bound < 1e-3 {
        format!("≤{}µs", (bound * 1e6).round())
    } else if bound < 1.0 {
        format!("≤{}ms", (bound * 1e3).round())
    } else {
        format!("≤{bound}s")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &str = "\
uniflow_node_packets_total{namespace=\"default\",node=\"pong\",kind=\"snippet\"} 10
uniflow_node_errors_total{namespace=\"default\",node=\"pong\",kind=\"snippet\"} 1
uniflow_node_latency_seconds_bucket{namespace=\"default\",node=\"pong\",kind=\"snippet\",le=\"0.00001\"} 9
uniflow_node_latency_seconds_bucket{namespace=\"default\",node=\"pong\",kind=\"snippet\",le=\"0.001\"} 10
uniflow_node_latency_seconds_bucket{namespace=\"default\",node=\"pong\",kind=\"snippet\",le=\"+Inf\"} 10
uniflow_listener_connections{listener=\"listener\"} 1
";

    #[test]
    fn totals_rates_and_quantiles_come_from_the_exporter_text() {
        let mut totals = Totals::default();
        let first = totals.next(FIRST);
        assert_eq!(first["pong"]["packets"], 10.0);
        assert_eq!(first["pong"]["errors"], 1.0);
        assert_eq!(first["pong"]["p50"], "≤10µs");
        assert_eq!(first["pong"]["p99"], "≤1ms");
        assert!(first.get("listener").is_none());
        // Ten more answers, all slow: the recent quantiles follow them.
        totals.at = Some(Instant::now() - std::time::Duration::from_secs(2));
        // The fast bucket stays at 9: the ten new answers all fall in the 1 ms one.
        let second = FIRST.replace("} 10\n", "} 20\n");
        let second = totals.next(&second);
        assert_eq!(second["pong"]["packets"], 20.0);
        assert!(
            (4.0..=6.0).contains(&second["pong"]["rate"].as_f64().unwrap()),
            "{second}"
        );
        assert_eq!(second["pong"]["p50"], "≤1ms");
    }
}
