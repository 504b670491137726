//! Env binding and `{{ .KEY }}` templating of a spec's fields.
//!
//! Each env variable's candidates are tried in order and the last one that resolves wins: a
//! literal always resolves; an entry naming a secret resolves when the secret exists, by
//! rendering its `value` against the secret's data. When a spec has env, every string in its
//! kind-specific fields (map keys included) is rendered against `{KEY: value}`. Unlike
//! upstream, a reference that does not resolve is an error naming the key, not `<no value>`.

use uniflow_value::{Map, Value};

use crate::{Diagnostic, EnvValue, Spec};

/// Finds a secret's data for an env entry that names one, in the spec's namespace.
pub type SecretLookup<'a> = dyn Fn(&EnvValue, &str) -> Option<Value> + 'a;

/// Resolves `spec.env` and renders the templates in its fields.
///
/// # Errors
/// Every variable that does not resolve and every template that fails.
pub fn bind(spec: &Spec, label: &str, secrets: &SecretLookup<'_>) -> Result<Spec, Vec<Diagnostic>> {
    if spec.env.is_empty() {
        return Ok(spec.clone());
    }
    let mut problems = Vec::new();
    let mut vars = Vec::with_capacity(spec.env.len());
    for (key, candidates) in &spec.env {
        let mut resolved = None;
        for (i, candidate) in candidates.iter().enumerate() {
            if !candidate.is_secret() {
                resolved = Some(candidate.value.clone());
                continue;
            }
            let Some(data) = secrets(candidate, &spec.namespace) else {
                continue;
            };
            match &candidate.value {
                Value::String(t) => match render(t, &data) {
                    Ok(s) => resolved = Some(Value::from(s)),
                    Err(e) => {
                        problems.push(Diagnostic::new(label, format!("env.{key}[{i}].value"), e))
                    }
                },
                other => resolved = Some(other.clone()),
            }
        }
        match resolved {
            Some(v) => vars.push((Value::from(key.clone()), v)),
            None => problems.push(Diagnostic::new(
                label,
                format!("env.{key}"),
                "unsupported value: no entry resolves (a referenced secret is missing)",
            )),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let data = Value::Map(vars.into_iter().collect());
    let mut out = spec.clone();
    out.fields = match render_value(
        &Value::Map(spec.fields.clone()),
        &data,
        label,
        "",
        &mut problems,
    ) {
        Value::Map(m) => m,
        _ => unreachable!("a map renders to a map"),
    };
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn render_value(
    v: &Value,
    data: &Value,
    label: &str,
    path: &str,
    problems: &mut Vec<Diagnostic>,
) -> Value {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match v {
        Value::String(s) if s.contains("{{") => match render(s, data) {
            Ok(r) => Value::from(r),
            Err(e) => {
                problems.push(Diagnostic::new(label, path, e));
                v.clone()
            }
        },
        Value::List(l) => Value::List(
            l.iter()
                .enumerate()
                .map(|(i, item)| render_value(item, data, label, &format!("{path}[{i}]"), problems))
                .collect(),
        ),
        Value::Map(m) => Value::Map(
            m.iter()
                .map(|(k, item)| {
                    let name = k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned);
                    let field = join(&name);
                    (
                        render_value(k, data, label, &field, problems),
                        render_value(item, data, label, &field, problems),
                    )
                })
                .collect::<Map>(),
        ),
        other => other.clone(),
    }
}

/// Renders `{{ . }}` and `{{ .a.b }}` references in `template` against `data`.
///
/// # Errors
/// An unterminated `{{`, an expression other than a `.path`, or a path that does not resolve.
pub fn render(template: &str, data: &Value) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unterminated `{{{{` in template {template:?}"))?;
        let expr = after[..end]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        let value = lookup(expr, data)?;
        write_scalar(&value, &mut out);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup(expr: &str, data: &Value) -> Result<Value, String> {
    let Some(path) = expr.strip_prefix('.') else {
        return Err(format!(
            "unsupported template expression `{{{{ {expr} }}}}`: only `.` and `.key` paths"
        ));
    };
    if path.is_empty() {
        return Ok(data.clone());
    }
    let keys: Vec<&str> = path.split('.').collect();
    data.pick(&keys)
        .cloned()
        .ok_or_else(|| format!("template key `.{path}` does not resolve"))
}

fn write_scalar(v: &Value, out: &mut String) {
    use std::fmt::Write;
    match v {
        Value::Null => {}
        Value::String(s) => out.push_str(s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Uint(u) => {
            let _ = write!(out, "{u}");
        }
        Value::Float(f) => {
            let _ = write!(out, "{f}");
        }
        Value::Bytes(b) => out.push_str(&String::from_utf8_lossy(b)),
        Value::Error(e) => out.push_str(e.message()),
        Value::List(_) | Value::Map(_) => {
            let _ = write!(out, "{v:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, parse};

    fn one(yaml: &str) -> Spec {
        parse(yaml, Format::Yaml, None).unwrap().remove(0)
    }

    #[test]
    fn literal_env_renders_fields_and_keys() {
        let s = one(
            "kind: snippet\ncode: '{{ .WORD }}!'\nport: '{{ .PORT }}'\nenv: {WORD: [{value: hi}], PORT: [{value: 8000}]}\n",
        );
        let b = bind(&s, "s", &|_, _| None).unwrap();
        assert_eq!(b.fields.get("code"), Some(&Value::from("hi!")));
        assert_eq!(b.fields.get("port"), Some(&Value::from("8000")));
    }

    #[test]
    fn secret_entries_render_against_secret_data_and_last_wins() {
        let s = one(
            "kind: snippet\ncode: '{{ .MSG }}'\nenv: {MSG: [{value: fallback}, {name: greeting, value: '{{ .text }}'}]}\n",
        );
        let data: Value = yaml_serde::from_str("text: hello").unwrap();
        let b = bind(&s, "s", &|e, ns| {
            (e.name.as_deref() == Some("greeting") && ns == "default").then(|| data.clone())
        })
        .unwrap();
        assert_eq!(b.fields.get("code"), Some(&Value::from("hello")));
        let b = bind(&s, "s", &|_, _| None).unwrap();
        assert_eq!(b.fields.get("code"), Some(&Value::from("fallback")));
    }

    #[test]
    fn missing_secret_and_missing_key_are_errors() {
        let s =
            one("kind: snippet\ncode: '{{ .MSG }}'\nenv: {MSG: [{name: greeting, value: x}]}\n");
        let errs = bind(&s, "s", &|_, _| None).unwrap_err();
        assert_eq!(errs[0].path, "env.MSG");
        assert!(errs[0].message.starts_with("unsupported value"));
        let s = one("kind: snippet\ncode: '{{ .NOPE }}'\nenv: {MSG: [{value: x}]}\n");
        let errs = bind(&s, "s", &|_, _| None).unwrap_err();
        assert_eq!(errs[0].path, "code");
        assert!(
            errs[0].message.contains("`.NOPE` does not resolve"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn without_env_braces_are_left_alone() {
        let s = one("kind: snippet\ncode: 'function () { return {{}} }'\n");
        assert_eq!(bind(&s, "s", &|_, _| None).unwrap(), s);
    }

    #[test]
    fn render_dot_and_nested() {
        let data: Value = yaml_serde::from_str("a: {b: 2}").unwrap();
        assert_eq!(render("x{{ .a.b }}y", &data).unwrap(), "x2y");
        assert_eq!(render("{{ . }}", &Value::from("s")).unwrap(), "s");
        assert!(render("{{ .a", &data).is_err());
        assert!(render("{{ len . }}", &data).is_err());
    }
}
