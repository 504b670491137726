//! Env templating: `render` of any template against any data, and `bind` of a spec with any
//! env and fields, answer a result or an error, never a panic; text without `{{` is left as
//! it is.

#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use uniflow_fuzz::{string, value};
use uniflow_spec::{EnvValue, Spec, bind, render};
use uniflow_value::{Map, Value};

const ALPHABET: &[&str] = &[
    "{{",
    "}}",
    "{",
    "}",
    " ",
    ".",
    "-",
    "a",
    "b",
    "K",
    "{{ .a }}",
    "{{ . }}",
    "{{- .K -}}",
    "len ",
    "é",
    "\0",
];

struct Input {
    template: String,
    data: Value,
    env: BTreeMap<String, Vec<EnvValue>>,
    fields: Map,
}

fn input(u: &mut Unstructured<'_>) -> Result<Input> {
    let template = string(u, ALPHABET)?;
    let data = value(u, ALPHABET)?;
    let mut env = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let mut candidates = Vec::new();
        for _ in 0..u.int_in_range(0..=2)? {
            // A named entry is a secret; the lookup below finds those named with an `a`.
            let name = if u.arbitrary()? {
                Some(string(u, ALPHABET)?)
            } else {
                None
            };
            candidates.push(EnvValue {
                id: None,
                name,
                value: value(u, ALPHABET)?,
            });
        }
        env.insert(string(u, ALPHABET)?, candidates);
    }
    let fields = match value(u, ALPHABET)? {
        Value::Map(m) => m,
        other => Map::from_iter([(Value::from("code"), other)]),
    };
    Ok(Input {
        template,
        data,
        env,
        fields,
    })
}

fn has_template(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("{{"),
        Value::List(items) => items.iter().any(has_template),
        Value::Map(m) => m.iter().any(|(k, v)| has_template(k) || has_template(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = input(&mut Unstructured::new(data)) else {
        return;
    };
    let rendered = render(&input.template, &input.data);
    if !input.template.contains("{{") {
        assert_eq!(rendered.as_deref(), Ok(input.template.as_str()));
    }
    if let Value::Map(m) = &input.data
        && let Some((Value::String(key), Value::String(text))) = m.iter().next()
        && !key.is_empty()
        && !key.contains(|c: char| matches!(c, '.' | '}' | '-') || c.is_whitespace())
    {
        let template = format!("<{{{{ .{key} }}}}>");
        assert_eq!(render(&template, &input.data), Ok(format!("<{text}>")));
    }

    let spec = Spec {
        kind: "snippet".to_owned(),
        namespace: "default".to_owned(),
        env: input.env,
        fields: input.fields,
        ..Spec::default()
    };
    let secrets = |e: &EnvValue, _: &str| {
        e.name
            .as_deref()
            .filter(|n| n.contains('a'))
            .map(|_| input.data.clone())
    };
    match bind(&spec, "fuzz", &secrets) {
        Ok(bound) => {
            assert_eq!(bound.env, spec.env);
            if spec.env.is_empty() || !has_template(&Value::Map(spec.fields.clone())) {
                assert_eq!(bound.fields, spec.fields);
            }
        }
        Err(problems) => assert!(!problems.is_empty()),
    }
});
