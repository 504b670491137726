//! The control kinds' tests: YAML cases in `tests/<kind>.yaml`, run by the core's shared
//! runner (`uniflow_core::cases`, whose header lists the keys) with every control kind, the
//! core's `test-*` kinds and the `test-flaky` kind below. Expressions are real CEL, from
//! `Languages::default()`.

use std::sync::Arc;

use serde::Deserialize;
use uniflow_core::shape::{OneToOne, Transform};
use uniflow_core::{CompileCx, Cx, Node, NodeSpec, Registry};
use uniflow_lang::Languages;
use uniflow_spec::Diagnostic;
use uniflow_value::{ErrorValue, Value};

/// Every control kind, the core's `test-*` kinds and `test-flaky`.
fn registry() -> Registry {
    let mut r = Registry::new();
    crate::register(&mut r, Arc::new(Languages::default()));
    uniflow_core::testing::register(&mut r);
    r.add::<FlakySpec>();
    r
}

/// Every case of every kind, from `src/tests/<kind>.yaml`.
#[tokio::test]
async fn cases() {
    // The directory cargo names when it runs the test, not the one baked in at build time: a
    // build cache shared by two checkouts (CI's clone and a developer's) may hold a test
    // binary built in the other one, whose files can differ or be gone.
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let dir = std::path::Path::new(&dir).join("src/tests");
    uniflow_core::cases::check_dir(&dir, &registry()).await;
}

/// `test-flaky`: fails the first `failures` packets of each process, then echoes.
#[derive(Deserialize)]
struct FlakySpec {
    failures: usize,
    /// How many packets each process sent.
    #[serde(skip)]
    seen: uniflow_core::Local<usize>,
}

impl NodeSpec for FlakySpec {
    const KIND: &'static str = "test-flaky";

    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(OneToOne(self)))
    }
}

impl Transform for FlakySpec {
    fn transform(&self, cx: &Cx<'_>, input: Value) -> Result<Value, ErrorValue> {
        let proc = cx.proc();
        let seen = proc.with_local(&self.seen, |n| {
            *n += 1;
            *n
        });
        if seen <= self.failures {
            return Err(ErrorValue::new(format!("flaky failure {seen}")));
        }
        Ok(input)
    }
}
