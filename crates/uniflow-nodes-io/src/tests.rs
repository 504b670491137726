//! The IO kinds' tests: YAML cases in `tests/<kind>.yaml`, run by the core's shared runner
//! (`uniflow_core::cases`, whose header lists the keys) with every IO kind and the core's
//! `test-*` kinds.

use uniflow_core::Registry;

fn registry() -> Registry {
    let mut r = Registry::new();
    crate::register(&mut r);
    uniflow_core::testing::register(&mut r);
    r
}

/// Every case of every kind, from `src/tests/<kind>.yaml`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases() {
    // The directory cargo names when it runs the test, not the one baked in at build time (a
    // build cache shared by two checkouts may hold a binary built in the other one).
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let dir = std::path::Path::new(&dir).join("src/tests");
    uniflow_core::cases::check_dir(&dir, &registry()).await;
}
