//! The snippet languages through the public API: the case table in `cases.yaml`, then what a
//! table cannot say (timeouts, recovery, isolation between runs, concurrency, bytes) and an
//! ignored timing loop for the per-call costs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use uniflow_lang::{Languages, Options, Program};
use uniflow_value::{Bytes, ErrorValue, Value};

/// One row of `cases.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    language: String,
    code: String,
    #[serde(default)]
    input: Value,
    input_error: Option<OneOrMany>,
    #[serde(default)]
    output: Value,
    error: Option<String>,
    compile_error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Runs one case and says what went wrong, if anything.
fn check(languages: &Languages, case: &Case) -> Result<(), String> {
    let compiled = languages.compile(&case.language, &case.code);
    let program = match (compiled, &case.compile_error) {
        (Err(e), Some(want)) if e.to_string().contains(want.as_str()) => return Ok(()),
        (Err(e), _) => return Err(format!("compile error: {e}")),
        (Ok(_), Some(want)) => return Err(format!("compiled, expected an error with {want:?}")),
        (Ok(program), None) => program,
    };
    let input = match &case.input_error {
        None => case.input.clone(),
        Some(OneOrMany::One(message)) => Value::Error(ErrorValue::new(message.clone())),
        Some(OneOrMany::Many(messages)) => Value::Error(ErrorValue::join(
            messages.iter().cloned().map(ErrorValue::new).collect(),
        )),
    };
    match (program.run(input), &case.error) {
        (Err(e), Some(want)) if e.message().contains(want.as_str()) => Ok(()),
        (Err(e), _) => Err(format!("run error: {e}")),
        (Ok(v), Some(want)) => Err(format!("ran to {v:?}, expected an error with {want:?}")),
        (Ok(v), None) if v == case.output => Ok(()),
        (Ok(v), None) => Err(format!("ran to {v:?}, expected {:?}", case.output)),
    }
}

#[test]
fn cases() {
    let cases: Vec<Case> = yaml_serde::from_str(include_str!("cases.yaml")).unwrap();
    assert!(cases.len() > 50, "the table lost its cases");
    let languages = Languages::default();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            check(&languages, case)
                .err()
                .map(|why| format!("{}: {why}", case.name))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn compile(language: &str, code: &str, timeout: Option<Duration>) -> Arc<dyn Program> {
    Languages::default()
        .compile_with(language, code, &Options::with_timeout(timeout))
        .unwrap()
}

#[test]
fn timeout_interrupts_a_runaway_script_and_the_program_runs_on() {
    let program = compile(
        "javascript",
        "export default function (spin) { while (spin) {} return 'done'; }",
        Some(Duration::from_millis(50)),
    );
    for _ in 0..2 {
        let start = Instant::now();
        let error = program.run(Value::Bool(true)).unwrap_err();
        assert_eq!(
            &**error.message(),
            "javascript run exceeded its timeout of 50ms"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            program.run(Value::Bool(false)).unwrap(),
            Value::from("done")
        );
    }
}

#[test]
fn timeout_also_covers_pending_promise_jobs() {
    let program = compile(
        "javascript",
        "export default async function () { for (;;) { await null; } }",
        Some(Duration::from_millis(50)),
    );
    let error = program.run(Value::Null).unwrap_err();
    assert!(error.message().contains("timeout"), "{error}");
}

#[test]
fn a_slow_cel_expression_fails_past_its_timeout() {
    // Nested comprehensions over a 300-element list: about 90 000 steps.
    let items = Value::List((0..300).map(Value::from).collect());
    let code = "self.map(x, self.filter(y, y < x).size()).size()";
    assert_eq!(
        compile("cel", code, None).run(items.clone()).unwrap(),
        Value::Int(300)
    );
    let error = compile("cel", code, Some(Duration::from_nanos(1)))
        .run(items)
        .unwrap_err();
    assert!(error.message().contains("exceeded its timeout"), "{error}");
}

#[test]
fn an_engine_that_ran_out_of_memory_is_replaced() {
    let program = compile(
        "javascript",
        "export default (n) => new Array(n).fill(1).length",
        None,
    );
    assert!(program.run(Value::Int(100_000_000)).is_err());
    assert_eq!(program.run(Value::Int(3)).unwrap(), Value::Int(3));
}

#[test]
fn no_state_leaks_between_runs() {
    let program = compile(
        "javascript",
        r#"
        let calls = 0;
        const seen = [];
        export default function (x) {
          calls += 1;
          seen.push(x);
          try { globalThis.leak = x; } catch (e) {}
          return { calls, seen: seen.length, leak: typeof leak };
        }
        "#,
        None,
    );
    let want = Value::Map(
        [
            ("calls", Value::Int(1)),
            ("seen", Value::Int(1)),
            ("leak", Value::from("undefined")),
        ]
        .into(),
    );
    for i in 0..5 {
        assert_eq!(program.run(Value::Int(i)).unwrap(), want, "run {i}");
    }
}

/// A module whose function is made once per engine (see `stateless` in javascript.rs) must
/// not let state through the function objects it keeps: each of these counts its calls on a
/// function object, and must count one call per run.
#[test]
fn no_state_leaks_through_function_objects() {
    for code in [
        "export default function f(x) { f.calls = (f.calls || 0) + 1; return f.calls; }",
        "function h() { h.n = (h.n || 0) + 1; return h.n; }\nexport default (x) => h();",
        "function h() { return h; }\nexport default (x) => { const f = h(); f.n = (f.n || 0) + 1; return f.n; };",
        "function h() {}\nexport default (x) => { const f = eval('h'); f.n = (f.n || 0) + 1; return f.n; };",
        "function* g() {}\nexport default (x) => { const p = Object.getPrototypeOf(g()); p.n = (p.n || 0) + 1; return p.n; };",
        "export default (x) => { const m = arguments[0]; m.n = (m.n || 0) + 1; return m.n; };",
    ] {
        let program = compile("javascript", code, None);
        for i in 0..3 {
            assert_eq!(
                program.run(Value::Int(i)).unwrap(),
                Value::Int(1),
                "{code}: run {i}"
            );
        }
    }
    // One that is reused gives the same answers on every run.
    let program = compile(
        "javascript",
        "const K = 10, NAME = `k`;\nfunction twice(x) { return x * 2; }\n\
         export function plus(a, b) { return a + b; }\n\
         export default function (x) { return { [NAME]: plus(twice(x), K) }; }",
        None,
    );
    for i in 0..3 {
        let want = Value::Map([("k", Value::Int(i * 2 + 10))].into());
        assert_eq!(program.run(Value::Int(i)).unwrap(), want, "run {i}");
    }
}

#[test]
fn programs_run_from_many_threads_at_once() {
    let program = compile(
        "javascript",
        "export default (x) => { let s = 0; for (let i = 0; i < 1000; i++) s += i; return x * s; }",
        None,
    );
    let cel = compile("cel", "self * 2", None);
    std::thread::scope(|scope| {
        for t in 0..4i64 {
            let (program, cel) = (&program, &cel);
            scope.spawn(move || {
                for i in 0..200 {
                    let x = t * 1000 + i;
                    assert_eq!(program.run(Value::Int(x)).unwrap(), Value::Int(x * 499_500));
                    assert_eq!(cel.run(Value::Int(x)).unwrap(), Value::Int(x * 2));
                }
            });
        }
    });
}

#[test]
fn bytes_cross_both_ways() {
    let body = Value::Bytes(Bytes::from_static(b"raw\x00\xff"));
    let echo = compile(
        "javascript",
        "export default (b) => [b instanceof Uint8Array, b]",
        None,
    );
    assert_eq!(
        echo.run(body.clone()).unwrap(),
        Value::from(vec![Value::Bool(true), body.clone()])
    );
    let buffer = compile(
        "javascript",
        "export default () => new Uint8Array([104, 105]).buffer",
        None,
    );
    assert_eq!(
        buffer.run(Value::Null).unwrap(),
        Value::Bytes(Bytes::from_static(b"hi"))
    );
    let cel = compile("cel", "size(self.body)", None);
    assert_eq!(
        cel.run(Value::Map([("body", body.clone())].into()))
            .unwrap(),
        Value::Int(5)
    );
    // A4: a body that was not decoded has no fields, so the condition fails.
    let field = compile("cel", r#"self.body.kind == "big""#, None);
    assert!(field.run(Value::Map([("body", body)].into())).is_err());
}

#[test]
fn a_returned_error_is_an_error_payload() {
    let program = compile("javascript", "export default (e) => e", None);
    let out = program
        .run(Value::Error(ErrorValue::new("unsupported type")))
        .unwrap();
    assert_eq!(
        out.as_error().map(|e| &**e.message()),
        Some("unsupported type")
    );
    let cel = compile("cel", "self", None);
    let joined = ErrorValue::join(vec![ErrorValue::new("a"), ErrorValue::new("b")]);
    let out = cel.run(Value::Error(joined)).unwrap();
    assert!(
        out.as_error().is_some_and(|e| e.is("a") && e.is("b")),
        "{out:?}"
    );
}

#[test]
fn cyclic_results_fail_instead_of_overflowing() {
    let program = compile(
        "javascript",
        "export default () => { const a = {}; a.self = a; return a; }",
        None,
    );
    let error = program.run(Value::Null).unwrap_err();
    assert!(error.message().contains("nests deeper than"), "{error}");
}

/// Per-call cost in this build: `cargo test --release -p uniflow-lang --test languages -- --ignored --nocapture`.
#[test]
#[ignore = "a timing loop; run it in release mode"]
fn per_call_costs() {
    let request: Value = yaml_serde::from_str(
        "{body: {name: uniflow}, header: {Accept: ['*/*'], Content-Type: [application/json], User-Agent: [curl/8.0]}, \
          host: 'localhost:8000', method: POST, path: /greet, protocol: HTTP/1.1, query: {}, status: 0}",
    )
    .unwrap();
    let cases: [(&str, &str, &str, Value); 6] = [
        ("cel", "self.a + 1", "{a: 1}", Value::Int(2)),
        (
            "cel",
            r#"self.method == "POST""#,
            "request",
            Value::Bool(true),
        ),
        (
            "javascript",
            "export default function (x) { return x + 1; }",
            "1",
            Value::Int(2),
        ),
        (
            "javascript",
            "export default (r) => ({ status: 201, body: { greeting: 'hello ' + r.body.name } })",
            "request",
            Value::Null,
        ),
        (
            "typescript",
            "export default (x: number): number => x + 1",
            "1",
            Value::Int(2),
        ),
        (
            "javascript",
            "export default function () { return 'pong'; }",
            "null",
            Value::from("pong"),
        ),
    ];
    for (language, code, input, want) in cases {
        let input = if input == "request" {
            request.clone()
        } else {
            yaml_serde::from_str(input).unwrap()
        };
        let start = Instant::now();
        let program = Languages::default().compile(language, code).unwrap();
        let compile = start.elapsed();
        let first = program.run(input.clone()).unwrap();
        if want != Value::Null {
            assert_eq!(first, want);
        }
        let n = 200_000u32;
        let start = Instant::now();
        for _ in 0..n {
            program.run(input.clone()).unwrap();
        }
        let per_call = start.elapsed() / n;
        println!("{language:>10} {code:<90} compile {compile:>10.1?}  run {per_call:>8.2?}");
        assert!(per_call < Duration::from_micros(50), "{per_call:?}");
    }
}

/// A payload too large for the engine's heap fails with a message that names the limit, not
/// with an empty or `null` one.
#[test]
fn a_payload_too_large_for_the_heap_names_the_limit() {
    // About 14 MB as JSON: 150,000 small objects, each with a list and a nested object.
    let row = |i: i64| -> Value {
        let nested = Value::Map([("x", Value::Int(i)), ("y", Value::from("zz"))].into());
        Value::Map(
            [
                ("id", Value::Int(i)),
                ("name", Value::from(format!("name{i}"))),
                (
                    "tags",
                    Value::List(vec![Value::from("a"), Value::from("b")].into()),
                ),
                ("nested", nested),
            ]
            .into(),
        )
    };
    let input = Value::List((0..150_000).map(row).collect());
    let program = compile(
        "javascript",
        "export default function (a) { return a; }",
        None,
    );
    let message = match program.run(input) {
        Ok(_) => panic!("a payload of 150,000 objects fitted the heap"),
        Err(e) => e.message().to_string(),
    };
    assert!(message.contains("memory limit of 64 MiB"), "{message}");
}

/// Map keys with a NUL character survive the round trip through JavaScript (found by the
/// `javascript` fuzz target: they came back cut at the NUL, and `"\0"` then collided with `""`).
#[test]
fn map_keys_with_nul_survive_javascript() {
    let input = Value::Map(uniflow_value::Map::from_iter([
        (Value::from(""), Value::Int(1)),
        (Value::from("\0"), Value::Int(2)),
        (Value::from("a\0b"), Value::Int(3)),
    ]));
    let program = compile("javascript", "export default (input) => input", None);
    assert_eq!(program.run(input.clone()).unwrap(), input);
}
