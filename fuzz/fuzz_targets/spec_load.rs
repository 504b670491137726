//! The spec loader: any text, read as YAML and as JSON, gives specs or diagnostics, never a
//! panic. Specs that load are checked, read back from their value form, and compiled into a
//! graph with every node kind.

#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use uniflow_core::{Graph, NodeSpec, Registry};
use uniflow_lang::Languages;
use uniflow_nodes_io::print::PrintSpec;
use uniflow_nodes_net::listener::ListenerSpec;
use uniflow_spec::{EnvValue, Format, Spec, check, parse};
use uniflow_value::Value;

/// The binary's registry, except that `print` and `listener` are kept off the file system:
/// the fuzzer would otherwise create files wherever a `filename` points and read whatever a
/// `cert` names (`/dev/zero` never ends). Inline PEM still reaches the TLS code.
static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut registry = Registry::new();
    uniflow_nodes_control::register(&mut registry, Arc::new(Languages::default()));
    uniflow_nodes_net::register(&mut registry);
    uniflow_nodes_io::register(&mut registry);
    registry.add_with(PrintSpec::KIND, |mut spec: PrintSpec, cx| {
        spec.filename = spec.filename.filter(|f| {
            matches!(
                f.as_str(),
                "stdout" | "stderr" | "/dev/stdout" | "/dev/stderr"
            )
        });
        spec.compile(cx)
    });
    registry.add_with(ListenerSpec::KIND, |mut spec: ListenerSpec, cx| {
        for pem in [&mut spec.cert, &mut spec.key].into_iter().flatten() {
            if !pem.contains("-----BEGIN") {
                *pem = "/nonexistent/uniflow-fuzz.pem".to_owned();
            }
        }
        spec.compile(cx)
    });
    registry
});

/// Every secret exists, so both branches of env resolution run.
fn secret(env: &EnvValue, _namespace: &str) -> Option<Value> {
    let name = env.name.as_deref().or(env.id.as_deref())?;
    Some(Value::Map(
        [
            ("name", Value::from(name.to_owned())),
            ("n", Value::Int(8000)),
        ]
        .into(),
    ))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Yaml, Format::Json] {
        let specs = match parse(text, format, Some("fuzz.yaml")) {
            Ok(specs) => specs,
            Err(problems) => {
                assert!(!problems.is_empty(), "a failed load names its problem");
                let _ = problems.to_string();
                continue;
            }
        };
        for spec in &specs {
            let again = Spec::from_value_in(&spec.to_value(), "again", &spec.namespace)
                .unwrap_or_else(|d| panic!("a loaded spec reads back: {d:?}"));
            assert_eq!(&again, spec, "a spec survives its value form");
        }
        let _ = check(&specs);
        if let Err(problems) = Graph::compile(specs, &REGISTRY, &secret) {
            assert!(!problems.is_empty(), "a failed compile names its problem");
            let _ = problems.to_string();
        }
    }
});
