//! HTTP scenarios and bad-input cases as YAML files in `tests/cases`, each run by `check`.
//!
//! A case holds `specs` (or `specs_file`, relative to the workspace root) and `requests`; each
//! request is `request: METHOD PATH` with optional `headers` and `body` (compressed first when
//! `body_encoding` names a coding, which is also sent as `Content-Encoding`), or `raw` bytes,
//! and an `expect` block: `status`, `headers` (exact values), `absent` (header names), `decode`
//! (a coding the response body is decompressed with before it is compared), `body` (exact) or
//! `body_contains`.

use uniflow_nodes_net::coding::Coding;
use uniflow_runtime::Links;
use uniflow_spec::{Format, load_file, parse};
use uniflow_value::Value;

use crate::support::{request, root, send, start};

async fn check(file: &str) {
    let path = root().join("crates/uniflow/tests/cases").join(file);
    let case: Value = yaml_serde::from_str(&std::fs::read_to_string(&path).expect("case file"))
        .expect("case parses");
    let specs = match (
        case.get("specs"),
        case.get("specs_file").and_then(Value::as_str),
    ) {
        (Some(specs), _) => parse(
            &yaml_serde::to_string(specs).unwrap(),
            Format::Yaml,
            Some(file),
        )
        .unwrap(),
        (None, Some(f)) => load_file(&root().join(f), "default").unwrap(),
        _ => panic!("{file}: no specs"),
    };
    let (graph, addr) = start(specs).await;
    let requests = case
        .get("requests")
        .and_then(Value::as_list)
        .expect("requests");
    assert!(!requests.is_empty());
    for (i, r) in requests.iter().enumerate() {
        let text = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
        let label = format!(
            "{file} request #{i} {}",
            text("name").or_else(|| text("request")).unwrap_or_default()
        );
        let raw = match (text("raw"), text("request")) {
            (Some(raw), _) => raw.into_bytes(),
            (None, Some(line)) => {
                let (method, target) = line.split_once(' ').expect("`METHOD PATH`");
                let headers: Vec<(String, String)> = r
                    .get("headers")
                    .and_then(Value::as_map)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().unwrap().to_owned(),
                                    v.as_str().unwrap().to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let mut headers = headers;
                let mut body = text("body").unwrap_or_default().into_bytes();
                if let Some(name) = text("body_encoding") {
                    body = coding(&name).encode(&body).to_vec();
                    headers.push(("Content-Encoding".to_owned(), name));
                }
                request(method, target, &headers, &body)
            }
            _ => panic!("{label}: no request"),
        };
        let reply = send(addr, &raw).await;
        let expect = r.get("expect").expect("expect");
        let body = match expect.get("decode").and_then(Value::as_str) {
            Some(name) => coding(name)
                .decode(&reply.body, 1 << 20)
                .unwrap_or_else(|e| panic!("{label}: body does not decode as {name}: {e:?}"))
                .to_vec(),
            None => reply.body.clone(),
        };
        let body = String::from_utf8_lossy(&body);
        if let Some(status) = expect.get("status").and_then(Value::as_i64) {
            assert_eq!(
                i64::from(reply.status),
                status,
                "{label}: status; body {body:?}"
            );
        }
        if let Some(headers) = expect.get("headers").and_then(Value::as_map) {
            for (k, v) in headers.iter() {
                let (k, v) = (k.as_str().unwrap(), v.as_str().unwrap());
                assert_eq!(
                    reply.header(k),
                    Some(v),
                    "{label}: header {k}; all {:?}",
                    reply.headers
                );
            }
        }
        if let Some(absent) = expect.get("absent").and_then(Value::as_list) {
            for k in absent.iter().filter_map(Value::as_str) {
                assert_eq!(
                    reply.header(k),
                    None,
                    "{label}: header {k} should be absent"
                );
            }
        }
        if let Some(want) = expect.get("body").and_then(Value::as_str) {
            assert_eq!(body, want, "{label}: body");
        }
        if let Some(want) = expect.get("body_contains").and_then(Value::as_str) {
            assert!(body.contains(want), "{label}: body {body:?} lacks {want:?}");
        }
    }
    graph.unload().await;
}

/// The content coding named in a case.
fn coding(name: &str) -> Coding {
    match Coding::parse(name) {
        Ok(Some(coding)) => coding,
        _ => panic!("unknown coding `{name}` in a case"),
    }
}

/// Runs every case file in `tests/cases`, each on its own task, and reports every failing
/// file at once.
#[tokio::test(flavor = "multi_thread")]
async fn cases() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("crates/uniflow/tests/cases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "tests/cases lost its files: {files:?}");
    let runs: Vec<_> = files
        .iter()
        .map(|file| {
            let file = file.clone();
            tokio::spawn(async move { check(&file).await })
        })
        .collect();
    let mut failed = Vec::new();
    for (file, run) in files.iter().zip(runs) {
        if let Err(e) = run.await {
            let why = e
                .try_into_panic()
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                })
                .unwrap_or_default();
            failed.push(format!("{file}: {why}"));
        }
    }
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}

/// Every example in `docs/nodes/*.md` compiles, loads and answers each `$ curl` line under it
/// with the output shown, so the node docs cannot drift from the code.
#[tokio::test]
async fn node_docs_examples_answer_as_documented() {
    let mut files: Vec<_> = std::fs::read_dir(root().join("docs/nodes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{files:?}");
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let yaml = code_blocks(&text, "yaml");
        assert_eq!(yaml.len(), 1, "{name}: one yaml example");
        let specs = parse(&yaml[0], Format::Yaml, Some(&name)).unwrap_or_else(|d| panic!("{d}"));
        let (graph, addr) = start(specs).await;
        let mut commands = 0;
        for block in code_blocks(&text, "sh") {
            commands += transcript(addr, &block, &name).await;
        }
        assert!(commands > 0, "{name}: no `$ curl` example");
        graph.unload().await;
    }
}

/// Sends each `$ curl ...` line of `block` to `addr` and checks that the response's body is
/// the lines under it; the number of commands.
async fn transcript(addr: std::net::SocketAddr, block: &str, name: &str) -> usize {
    let mut commands = 0;
    let mut lines = block.lines().peekable();
    while let Some(line) = lines.next() {
        let command = line
            .strip_prefix("$ ")
            .expect("a shell line starts with `$ `");
        let mut output = Vec::new();
        while let Some(next) = lines.next_if(|l| !l.starts_with("$ ")) {
            output.push(next);
        }
        let reply = send(addr, &curl(command)).await;
        let body = String::from_utf8_lossy(&reply.body);
        assert_eq!(
            body.trim_end_matches('\n'),
            output.join("\n").trim_end_matches('\n'),
            "{name}: `{command}`"
        );
        commands += 1;
    }
    commands
}

/// `examples/todos-sql.yaml` answers the commands its header lists, in order, on a SQLite
/// file of its own: a row created by one request is read by the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todos_sql_example_answers_the_commands_of_its_header() {
    let path = root().join("examples/todos-sql.yaml");
    let dir = std::env::temp_dir().join(format!("uniflow-todos-sql-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut specs = load_file(&path, "default").unwrap_or_else(|d| panic!("{d}"));
    for spec in specs.iter_mut().filter(|s| s.kind == "sql") {
        let source = dir.join("todos.db").display().to_string();
        spec.fields = spec.fields.insert("source", source);
    }
    let (graph, addr) = start(specs).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .skip_while(|l| !l.starts_with("#   $ "))
        .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
        .collect();
    assert!(transcript(addr, &header, "todos-sql.yaml").await >= 8);
    graph.unload().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bodies of the fenced code blocks tagged `lang`.
fn code_blocks(text: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match current.as_mut() {
            None if line.strip_prefix("```") == Some(lang) => current = Some(String::new()),
            None => {}
            Some(_) if line == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

/// The request a `curl -s [-X M] [-H 'K: V']... [-d 'body'] localhost:8000/path` line sends,
/// with curl's defaults: `Accept: */*`, and POST with a form type when there is a body.
fn curl(command: &str) -> Vec<u8> {
    let mut words = Vec::new();
    for (i, part) in command.split('\'').enumerate() {
        if i % 2 == 1 {
            words.push(part.to_owned());
        } else {
            words.extend(part.split_whitespace().map(str::to_owned));
        }
    }
    let mut words = words.into_iter();
    assert_eq!(words.next().as_deref(), Some("curl"), "{command}");
    let (mut method, mut path, mut body) = (None, None, None);
    let mut headers = vec![("Accept".to_owned(), "*/*".to_owned())];
    while let Some(word) = words.next() {
        match word.as_str() {
            "-s" => {}
            "-X" => method = words.next(),
            "-H" => {
                let header = words.next().expect("a header");
                let (k, v) = header.split_once(": ").expect("`Name: value`");
                headers.push((k.to_owned(), v.to_owned()));
            }
            "-d" => body = words.next(),
            url => {
                let rest = url
                    .strip_prefix("localhost:8000")
                    .expect("a localhost:8000 URL");
                path = Some(if rest.is_empty() {
                    "/".to_owned()
                } else {
                    rest.to_owned()
                });
            }
        }
    }
    if body.is_some() && !headers.iter().any(|(k, _)| k == "Content-Type") {
        headers.push((
            "Content-Type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ));
    }
    let method = method.unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.to_owned());
    let path = path.expect("a URL");
    request(
        &method,
        &path,
        &headers,
        body.unwrap_or_default().as_bytes(),
    )
}

/// Every file in `examples/` compiles as `start --from-specs` would load it, given what the
/// admin API needs: `-e PORT=...` and the secret `admin`.
#[tokio::test]
async fn every_example_compiles() {
    let store = uniflow_store::Store::open("mem://").await.unwrap();
    let registry = uniflow::registry_with_system(&store, "default");
    let admin = uniflow_spec::Secret::from_value(
        &yaml_serde::from_str("{name: admin, namespace: default, data: {token: t0ken}}").unwrap(),
        "admin",
    )
    .unwrap();
    let around = uniflow_runtime::Snapshot {
        secrets: vec![admin],
        ..uniflow_runtime::Snapshot::default()
    };
    let env = [("PORT".to_owned(), Value::from("8000"))];
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let specs = load_file(&path, "default").unwrap_or_else(|d| panic!("{d}"));
            let checked = uniflow_runtime::check(&registry, &specs, &around, &env, Links::Within);
            assert!(
                checked.errors.is_empty(),
                "{}: {}",
                path.display(),
                checked.errors
            );
            seen += 1;
        }
    }
    assert!(seen >= 2, "examples/ holds the example workflows");
}
