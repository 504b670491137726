//! Wall-clock benchmarks, named after the code path they measure. Run `cargo bench -p
//! uniflow-benches`; allocations per operation are counted by divan's `AllocProfiler`.

use std::hint::black_box;

use uniflow_benches as fx;
use uniflow_core::Process;

// Counts allocations on top of the `uniflow` binary's allocator, so times match what it runs.
#[global_allocator]
static ALLOC: divan::AllocProfiler<tikv_jemallocator::Jemalloc> =
    divan::AllocProfiler::new(tikv_jemallocator::Jemalloc);

fn main() {
    divan::main();
}

mod core {
    use super::*;

    /// One port hop: write -> one-to-one node -> answer, within an existing process.
    #[divan::bench]
    fn port_hop(bencher: divan::Bencher) {
        let f = fx::hop();
        let proc = Process::new();
        bencher.bench_local(|| black_box(f.run_in(&proc)));
    }

    /// Fan-out to N readers and the merge of their answers.
    #[divan::bench(args = [2, 8])]
    fn fan_out(bencher: divan::Bencher, n: usize) {
        let f = fx::fan_out(n);
        let proc = Process::new();
        bencher.bench_local(|| black_box(f.run_in(&proc)));
    }

    /// Creating a process and exiting it.
    #[divan::bench]
    fn process_create_exit() {
        let p = Process::new();
        p.exit(None);
        black_box(p);
    }

    /// The first write of a new process (upstream's `OutPort.Open` hot spot): process create,
    /// one hop, exit.
    #[divan::bench]
    fn first_write_of_a_process(bencher: divan::Bencher) {
        let f = fx::hop();
        bencher.bench_local(|| black_box(f.run()));
    }

    /// Compiling and linking a 1,000-node spec file (already parsed).
    #[divan::bench(sample_count = 20)]
    fn compile_1000_nodes(bencher: divan::Bencher) {
        let yaml = fx::chain_yaml(1000);
        let registry = fx::registry();
        bencher
            .with_inputs(|| fx::specs(&yaml))
            .bench_local_values(|specs| {
                black_box(uniflow_core::Graph::compile(specs, &registry, &|_, _| None).is_ok())
            });
    }
}

mod nodes {
    use super::*;

    /// The router matching `GET /ping` among N routes (adds `params`, writes to `out[0]`).
    #[divan::bench(args = [10, 1000])]
    fn router_match(bencher: divan::Bencher, routes: usize) {
        let f = fx::router(routes);
        let proc = Process::new();
        bencher.bench_local(|| black_box(f.run_in(&proc)));
    }

    /// A `text` snippet.
    #[divan::bench]
    fn snippet_text(bencher: divan::Bencher) {
        let f = fx::snippet("text", "pong");
        let proc = Process::new();
        bencher.bench_local(|| black_box(f.run_in(&proc)));
    }

    /// A `json` snippet.
    #[divan::bench]
    fn snippet_json(bencher: divan::Bencher) {
        let f = fx::snippet("json", "{\"hello\": \"world\"}");
        let proc = Process::new();
        bencher.bench_local(|| black_box(f.run_in(&proc)));
    }
}

mod control {
    use super::*;

    /// A CEL snippet `self.a + 1`.
    #[divan::bench]
    fn snippet_cel(bencher: divan::Bencher) {
        let f = fx::snippet_on(
            "cel",
            "self.a + 1",
            uniflow_value::Value::Map([("a", 1)].into()),
        );
        let proc = Process::new();
        bencher.bench_local(|| black_box(f.run_in(&proc)));
    }

    /// A trivial JavaScript snippet.
    #[divan::bench]
    fn snippet_javascript(bencher: divan::Bencher) {
        let f = fx::snippet_on(
            "javascript",
            "export default function (x) { return x + 1; }",
            uniflow_value::Value::Int(1),
        );
        let proc = Process::new();
        bencher.bench_local(|| black_box(f.run_in(&proc)));
    }

    /// `if` with a CEL condition, into an echo.
    #[divan::bench]
    fn r#if(bencher: divan::Bencher) {
        let f = fx::r#if();
        let proc = Process::new();
        bencher.bench_local(|| black_box(f.run_in(&proc)));
    }

    /// `switch` whose second condition matches, into an echo.
    #[divan::bench]
    fn switch(bencher: divan::Bencher) {
        let f = fx::switch();
        let proc = Process::new();
        bencher.bench_local(|| black_box(f.run_in(&proc)));
    }

    /// `loop` over three elements into an echo.
    #[divan::bench]
    fn loop_3(bencher: divan::Bencher) {
        let f = fx::r#loop();
        let proc = Process::new();
        bencher.bench_local(|| black_box(f.run_in(&proc)));
    }
}

mod ping {
    use super::*;

    /// The in-process ping path: request -> payload -> router -> snippet -> response bytes.
    #[divan::bench]
    fn in_process(bencher: divan::Bencher) {
        let ping = fx::Ping::new();
        bencher.bench_local(|| black_box(ping.run()));
    }
}
