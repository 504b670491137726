//! Reading specs from YAML or JSON text.

use std::path::Path;

use uniflow_value::Value;

use crate::{Diagnostic, Diagnostics, Spec};

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
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::file(file.clone(), format!("cannot read: {e}")))?;
    parse_in(&text, Format::of_path(path), Some(&file), namespace)
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
    let mut specs = Vec::with_capacity(items.len());
    let mut problems = Diagnostics::default();
    for (i, item) in items.iter().enumerate() {
        let position = item
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("#{i}"), str::to_owned);
        match Spec::from_value_in(item, &position, namespace) {
            Ok(spec) => specs.push(spec),
            Err(ds) => problems.extend(ds.into_iter().map(|d| d.in_file(file))),
        }
    }
    problems.into_result(specs)
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
}
