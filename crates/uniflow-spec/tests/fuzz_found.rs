//! Hostile spec text found while fuzzing the loader (`fuzz/fuzz_targets/spec_load.rs`), as
//! plain tests.

use std::time::{Duration, Instant};

use uniflow_spec::{Format, parse};

/// Flow collections nested 40 000 deep (160 KB of `{a: `) kept the YAML scanner busy for
/// seconds: it rescans every open level for each token, so the time grows with the square of
/// the depth (20 000 levels: 1 s, 100 000: 38 s in a release build). The deserializer refuses
/// more than 128 levels anyway, so the loader can refuse them before scanning.
#[test]
#[ignore = "fails: the YAML scanner is quadratic in flow nesting; see the doc comment"]
fn deep_flow_nesting_is_refused_quickly() {
    for text in ["{a: ".repeat(40_000), "[".repeat(40_000)] {
        let start = Instant::now();
        let result = parse(&text, Format::Yaml, Some("deep.yaml"));
        let took = start.elapsed();
        let problems = result.expect_err("nesting that deep is an error");
        assert!(problems.to_string().contains("deep.yaml"), "{problems}");
        // Generous: a linear pass over 160 KB takes well under a millisecond.
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
}
