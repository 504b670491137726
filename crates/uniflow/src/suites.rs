//! `uniflow test`: runs the `test` nodes of a running namespace as suites, all at once, and
//! reports each as upstream's runner does (`PASS\t<ns/name>\t<duration>`, or `FAIL` and the
//! error indented below), and as JUnit XML for CI (see `docs/testing.md`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use regex::Regex;
use uniflow_nodes_control::test::TestNode;

use crate::Running;

/// How one suite ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `namespace/name`.
    pub name: String,
    /// How long it ran.
    pub duration: Duration,
    /// Why it failed (secret values masked), when it did.
    pub error: Option<String>,
}

impl Outcome {
    /// The report's lines: `PASS` or `FAIL`, the name and the duration, then the error
    /// indented by 4 spaces.
    pub fn lines(&self) -> String {
        let status = if self.error.is_some() { "FAIL" } else { "PASS" };
        let mut out = format!("{status}\t{}\t{:?}", self.name, self.duration);
        for line in self.error.iter().flat_map(|e| e.lines()) {
            let _ = write!(out, "\n    {line}");
        }
        out
    }
}

/// Runs every `test` node of `running` whose `namespace/name` `filter` matches (all of them
/// without one), concurrently; `report` is called with each outcome as it comes. Returns the
/// outcomes in the order they ended.
pub async fn run(
    running: &Running,
    filter: Option<&Regex>,
    mut report: impl FnMut(&Outcome),
) -> Vec<Outcome> {
    let graph = running.graph();
    let mut suites: FuturesUnordered<_> = graph
        .symbols()
        .iter()
        .enumerate()
        .filter_map(|(i, symbol)| {
            let node = symbol.node.downcast_ref::<TestNode>()?;
            let name = format!("{}/{}", symbol.spec.namespace, symbol.spec.label(i));
            filter
                .is_none_or(|f| f.is_match(&name))
                .then_some((name, node))
        })
        .map(|(name, node)| async move {
            let started = Instant::now();
            let result = node.run().await;
            Outcome {
                name,
                duration: started.elapsed(),
                error: result.err().map(|e| running.redact(e.message().as_ref())),
            }
        })
        .collect();
    let mut outcomes = Vec::with_capacity(suites.len());
    while let Some(outcome) = suites.next().await {
        report(&outcome);
        outcomes.push(outcome);
    }
    outcomes
}

/// The outcomes as a JUnit XML report: one `testsuite` named `uniflow`, one `testcase` per
/// suite (its namespace as the class name), a `failure` with the error for each that failed.
pub fn junit(outcomes: &[Outcome]) -> String {
    let failures = outcomes.iter().filter(|o| o.error.is_some()).count();
    let total: f64 = outcomes.iter().map(|o| o.duration.as_secs_f64()).sum();
    let mut cases = String::new();
    for outcome in outcomes {
        let class = outcome.name.split_once('/').map_or("", |(ns, _)| ns);
        let _ = write!(
            cases,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.6}\"",
            escape(&outcome.name),
            escape(class),
            outcome.duration.as_secs_f64()
        );
        match &outcome.error {
            None => cases.push_str("/>\n"),
            Some(error) => {
                let first = error.lines().next().unwrap_or_default();
                let _ = write!(
                    cases,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    escape(first),
                    escape(error)
                );
            }
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <testsuites tests=\"{n}\" failures=\"{failures}\" time=\"{total:.6}\">\n  \
         <testsuite name=\"uniflow\" tests=\"{n}\" failures=\"{failures}\" errors=\"0\" time=\"{total:.6}\">\n\
         {cases}  </testsuite>\n</testsuites>\n",
        n = outcomes.len()
    )
}

/// `text` with XML's special characters escaped, and the control characters XML 1.0 cannot
/// hold dropped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_indented_and_escaped_in_xml() {
        let failed = Outcome {
            name: "default/t".to_owned(),
            duration: Duration::from_millis(2),
            error: Some("assert failed: self < 1 && \"x\"".to_owned()),
        };
        assert_eq!(
            failed.lines(),
            "FAIL\tdefault/t\t2ms\n    assert failed: self < 1 && \"x\""
        );
        let xml = junit(&[failed]);
        assert!(
            xml.contains("message=\"assert failed: self &lt; 1 &amp;&amp; &quot;x&quot;\""),
            "{xml}"
        );
    }
}
