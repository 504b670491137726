//! Runs one benchmarked code path N times, for instruction counting and profilers:
//! `ops <name> <iterations>`; `ops list` names them. `scripts/bench-gate` runs it under
//! `valgrind --tool=callgrind`, counting only the measured loop, twice with different N, so
//! that one-time costs inside the loop cancel out and the difference is the cost of N
//! operations. Also handy under `perf record`.

use std::hint::black_box;
use std::time::Instant;

use uniflow_benches as fx;
use uniflow_core::Process;

// The allocator of the `uniflow` binary, so counts and times match what it runs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "list".to_owned());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mut op = build(&name).unwrap_or_else(|| {
        eprintln!("unknown benchmark `{name}`; known: {}", NAMES.join(", "));
        std::process::exit(if name == "list" { 0 } else { 2 });
    });
    let start = Instant::now();
    measured(&mut op, n);
    let elapsed = start.elapsed();
    println!(
        "{name}: {n} iterations, {:.1} ns each",
        elapsed.as_nanos() as f64 / n as f64
    );
}

/// The measured loop, a function of its own so that `scripts/bench-gate` can have callgrind
/// count only what runs inside it (`--toggle-collect=ops::measured`): the setup (parsing and
/// compiling the specs) allocates differently from run to run, which made the counts of two
/// runs differ by hundreds of instructions per operation.
#[inline(never)]
fn measured(op: &mut dyn FnMut(), n: usize) {
    for _ in 0..n {
        op();
    }
}

const NAMES: &[&str] = &[
    "core.port_hop",
    "core.fan_out_2",
    "core.fan_out_8",
    "core.process_create_exit",
    "core.first_write",
    "nodes.router_10",
    "nodes.router_1000",
    "nodes.snippet_text",
    "nodes.snippet_json",
    "nodes.snippet_cel",
    "nodes.snippet_javascript",
    "nodes.if",
    "nodes.switch",
    "nodes.loop_3",
    "request.cel_self",
    "request.cel_field",
    "request.if_method",
    "request.js_identity",
    "request.js_field",
    "request.js_object",
    "ping.in_process",
];

fn build(name: &str) -> Option<Box<dyn FnMut()>> {
    let in_proc = |f: fx::Fixture| -> Box<dyn FnMut()> {
        let proc = Process::new();
        Box::new(move || {
            black_box(f.run_in(&proc));
        })
    };
    Some(match name {
        "core.port_hop" => in_proc(fx::hop()),
        "core.fan_out_2" => in_proc(fx::fan_out(2)),
        "core.fan_out_8" => in_proc(fx::fan_out(8)),
        "core.process_create_exit" => Box::new(|| {
            let p = Process::new();
            p.exit(None);
            black_box(p);
        }),
        "core.first_write" => {
            let f = fx::hop();
            Box::new(move || {
                black_box(f.run());
            })
        }
        "nodes.router_10" => in_proc(fx::router(10)),
        "nodes.router_1000" => in_proc(fx::router(1000)),
        "nodes.snippet_text" => in_proc(fx::snippet("text", "pong")),
        "nodes.snippet_json" => in_proc(fx::snippet("json", "{\"hello\": \"world\"}")),
        "nodes.snippet_cel" => in_proc(fx::snippet_on("cel", "self.a + 1", a_map())),
        "nodes.snippet_javascript" => in_proc(fx::snippet_on(
            "javascript",
            "export default function (x) { return x + 1; }",
            uniflow_value::Value::Int(1),
        )),
        "nodes.if" => in_proc(fx::r#if()),
        "nodes.switch" => in_proc(fx::switch()),
        "nodes.loop_3" => in_proc(fx::r#loop()),
        "request.cel_self" => in_proc(fx::snippet_on_request("cel", "self")),
        "request.cel_field" => in_proc(fx::snippet_on_request("cel", "self.body.score")),
        "request.if_method" => in_proc(fx::if_on_request("self.method == \"GET\"")),
        "request.js_identity" => in_proc(fx::snippet_on_request("javascript", fx::JS_IDENTITY)),
        "request.js_field" => in_proc(fx::snippet_on_request("javascript", fx::JS_FIELD)),
        "request.js_object" => in_proc(fx::snippet_on_request("javascript", fx::JS_OBJECT)),
        "ping.in_process" => {
            let ping = fx::Ping::new();
            Box::new(move || {
                black_box(ping.run());
            })
        }
        _ => return None,
    })
}

fn a_map() -> uniflow_value::Value {
    uniflow_value::Value::Map([("a", 1)].into())
}
