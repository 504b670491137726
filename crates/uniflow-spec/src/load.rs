//! Reading specs, secrets and charts from YAML or JSON text: a file holds one resource or a
//! list of them, and every malformed entry is reported with the file and the entry.

use std::path::Path;

use uniflow_value::Value;

use crate::{Chart, Diagnostic, Diagnostics, Secret, Spec};

/// The syntax of a spec file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (the default; most JSON parses as YAML too).
    Yaml,
    /// JSON, chosen by a `.json` extension for JSON's own error messages.
    Json,
}

impl Format {
    /// The format a file's extension implies.
    pub fn of_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Reads a file holding a list of specs or a single spec; specs naming no namespace land in
/// `namespace`.
///
/// # Errors
/// Every problem found, each naming the file (and the spec and field when known).
pub fn load_file(path: &Path, namespace: &str) -> Result<Vec<Spec>, Diagnostics> {
    read_file(path, |text, format, file| {
        parse_in(text, format, file, namespace)
    })
}

/// Reads a file holding a list of secrets or a single secret; secrets naming no namespace land
/// in `namespace`.
///
/// # Errors
/// Every problem found, each naming the file (and the secret and field when known), never the
/// secret's data.
pub fn load_secrets_file(path: &Path, namespace: &str) -> Result<Vec<Secret>, Diagnostics> {
    read_file(path, |text, format, file| {
        parse_secrets(text, format, file, namespace)
    })
}

/// Reads a file holding a list of charts or a single chart; charts naming no namespace land in
/// `namespace`.
///
/// # Errors
/// Every problem found, each naming the file (and the chart and field when known).
pub fn load_charts_file(path: &Path, namespace: &str) -> Result<Vec<Chart>, Diagnostics> {
    read_file(path, |text, format, file| {
        parse_charts(text, format, file, namespace)
    })
}

/// Parses text holding a list of secrets or a single secret, like [`parse_in`] does specs.
///
/// # Errors
/// A syntax error (with line and column), or every malformed secret.
pub fn parse_secrets(
    text: &str,
    format: Format,
    file: Option<&str>,
    namespace: &str,
) -> Result<Vec<Secret>, Diagnostics> {
    parse_items(text, format, file, |item, label| {
        Secret::from_value_in(item, label, namespace)
    })
}

/// Parses text holding a list of charts or a single chart, like [`parse_in`] does specs.
///
/// # Errors
/// A syntax error (with line and column), or every malformed chart.
pub fn parse_charts(
    text: &str,
    format: Format,
    file: Option<&str>,
    namespace: &str,
) -> Result<Vec<Chart>, Diagnostics> {
    parse_items(text, format, file, |item, label| {
        Chart::from_value_in(item, label, namespace)
    })
}

fn read_file<T>(
    path: &Path,
    parse: impl FnOnce(&str, Format, Option<&str>) -> Result<T, Diagnostics>,
) -> Result<T, Diagnostics> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::file(file.clone(), format!("cannot read: {e}")))?;
    parse(&text, Format::of_path(path), Some(&file))
}

/// Parses text holding a list of specs or a single spec. `file` names the source in
/// diagnostics.
///
/// # Errors
/// A syntax error (with line and column), or every malformed spec.
pub fn parse(text: &str, format: Format, file: Option<&str>) -> Result<Vec<Spec>, Diagnostics> {
    parse_in(text, format, file, crate::DEFAULT_NAMESPACE)
}

/// How deep `[` and `{` may nest in YAML text. The YAML scanner rescans every open flow level
/// for each token, so its time grows with the square of the depth (20,000 levels: a second),
/// and the decoder refuses values nested deeper than 128 anyway. Counted over the raw text, so
/// brackets inside strings count too: the bound is far above what balanced code in a snippet
/// reaches.
const MAX_FLOW_DEPTH: usize = 1000;

/// The deepest nesting of `[` and `{` in `text`, counting every bracket.
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Like [`parse`], with `namespace` for specs that name none.
///
/// # Errors
/// A syntax error (with line and column), or every malformed spec.
pub fn parse_in(
    text: &str,
    format: Format,
    file: Option<&str>,
    namespace: &str,
) -> Result<Vec<Spec>, Diagnostics> {
    parse_items(text, format, file, |item, label| {
        Spec::from_value_in(item, label, namespace)
    })
}

/// Parses a file's text into its entries (one value is a list of one), each read by `read`
/// with its label: its name, else `#N`.
fn parse_items<T>(
    text: &str,
    format: Format,
    file: Option<&str>,
    read: impl Fn(&Value, &str) -> Result<T, Vec<Diagnostic>>,
) -> Result<Vec<T>, Diagnostics> {
    let label = file.unwrap_or("<input>");
    let parsed: Result<Value, String> = match format {
        Format::Yaml if flow_depth(text) > MAX_FLOW_DEPTH => Err(format!(
            "`[` and `{{` nest deeper than {MAX_FLOW_DEPTH} levels"
        )),
        Format::Yaml => yaml_serde::from_str(text).map_err(|e| e.to_string()),
        Format::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
    };
    let value = parsed.map_err(|e| Diagnostic::file(label, format!("invalid syntax: {e}")))?;
    let items: Vec<Value> = match value {
        Value::Null => Vec::new(),
        Value::List(l) => l.to_vec(),
        single => vec![single],
    };
    let mut out = Vec::with_capacity(items.len());
    let mut problems = Diagnostics::default();
    for (i, item) in items.iter().enumerate() {
        let position = item
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("#{i}"), str::to_owned);
        match read(item, &position) {
            Ok(one) => out.push(one),
            Err(ds) => problems.extend(ds.into_iter().map(|d| d.in_file(file))),
        }
    }
    problems.into_result(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_object_is_a_list_of_one() {
        let specs = parse("kind: nop\nname: a\n", Format::Yaml, None).unwrap();
        assert_eq!(specs.len(), 1);
        let specs = parse(r#"[{"kind": "nop"}, {"kind": "nop"}]"#, Format::Json, None).unwrap();
        assert_eq!(specs.len(), 2);
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let err = parse("- kind: nop\n  name: [a\n", Format::Yaml, Some("f.yaml")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("f.yaml: invalid syntax"), "{text}");
        assert!(text.contains("line 3") || text.contains("line 2"), "{text}");
    }

    #[test]
    fn every_bad_spec_is_reported() {
        let err = parse(
            "- {name: a}\n- 3\n- {kind: nop}\n",
            Format::Yaml,
            Some("f.yaml"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 2, "{text}");
        assert!(
            text.contains("f.yaml: spec `a` field `kind`: missing required field"),
            "{text}"
        );
        assert!(
            text.contains("f.yaml: spec `#1`: a spec must be a map, found int"),
            "{text}"
        );
    }

    #[test]
    fn secret_and_chart_files_report_every_entry() {
        let secrets = parse_secrets(
            r#"[{"name": "a", "data": 1}, {"data": {"k": "v"}}]"#,
            Format::Json,
            None,
            "n",
        )
        .unwrap();
        assert_eq!(secrets.len(), 2);
        assert_eq!(secrets[1].namespace, "n");
        let err = parse_secrets(
            "- {name: a}
- {name: b, data: 1}
- 2
",
            Format::Yaml,
            Some("s.yaml"),
            "n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 2, "{text}");
        assert!(
            text.contains("s.yaml: spec `a` field `data`: missing required field"),
            "{text}"
        );
        assert!(
            text.contains("s.yaml: spec `#2`: a secret must be a map"),
            "{text}"
        );

        let charts = parse_charts(
            "name: c
specs: [{kind: nop}]
",
            Format::Yaml,
            None,
            "n",
        )
        .unwrap();
        assert_eq!(charts[0].specs[0].namespace, "n");
        let err = parse_charts(
            "- {specs: [{}]}
",
            Format::Yaml,
            Some("c.yaml"),
            "n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("c.yaml: spec `#0` field `specs[0].kind`"),
            "{text}"
        );
        assert!(text.contains("c.yaml: spec `#0` field `name`"), "{text}");
    }

    #[test]
    fn loading_a_missing_file_names_it() {
        let err = load_secrets_file(Path::new("/nonexistent/s.yaml"), "default").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/s.yaml: cannot read"),
            "{err}"
        );
        let err = load_charts_file(Path::new("/nonexistent/c.json"), "default").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/c.json: cannot read"),
            "{err}"
        );
    }
}
