//! Hostile spec text found while fuzzing the loader (`fuzz/fuzz_targets/spec_load.rs`), as
//! plain tests.

use uniflow_spec::{Format, parse};

/// Flow collections nested 40 000 deep (160 KB of `{a: `) kept the YAML scanner busy for
/// seconds: it rescans every open level for each token, so the time grows with the square of
/// the depth (20 000 levels: 1 s, 100 000: 38 s in a release build). The loader now refuses
/// such text before the scanner sees it, naming the file and the limit.
#[test]
fn deep_flow_nesting_is_refused_before_it_is_scanned() {
    for text in ["{a: ".repeat(40_000), "[".repeat(40_000)] {
        let problems = parse(&text, Format::Yaml, Some("deep.yaml"))
            .expect_err("nesting that deep is an error")
            .to_string();
        assert!(problems.contains("deep.yaml"), "{problems}");
        assert!(
            problems.contains("nest deeper than 1000 levels"),
            "{problems}"
        );
    }
    // Within the bound the decoder's own, lower limit speaks.
    let problems = parse(&"[".repeat(500), Format::Yaml, Some("deep.yaml"))
        .expect_err("500 levels is deeper than a spec can be")
        .to_string();
    assert!(!problems.contains("1000 levels"), "{problems}");
}
