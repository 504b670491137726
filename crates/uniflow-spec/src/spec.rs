//! The spec resource and its parts.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use uniflow_value::{Map, Value};

use crate::Diagnostic;

/// The namespace a spec without one lands in.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A node spec as written: the common keys plus the kind's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spec {
    /// A UUID; the store assigns a v7 one when missing.
    pub id: Option<String>,
    /// Selects the node kind; required.
    pub kind: String,
    /// Defaults to [`DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// Unique within its namespace when set.
    pub name: Option<String>,
    /// Free metadata.
    pub annotations: BTreeMap<String, String>,
    /// Outgoing links: this node's output port name to the input ports it feeds.
    pub ports: BTreeMap<String, Vec<PortRef>>,
    /// Template variables for the kind's fields.
    pub env: BTreeMap<String, Vec<EnvValue>>,
    /// Every other key, kept as written; only these are templated and decoded by the kind.
    pub fields: Map,
}

/// A link target: the input port `port` of the node named `name` (or with id `id`) in the same
/// namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRef {
    /// The target's id.
    pub id: Option<String>,
    /// The target's name.
    pub name: Option<String>,
    /// The target's input port.
    pub port: String,
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.name, &self.id) {
            (Some(name), _) => write!(f, "{name}.{}", self.port),
            (None, Some(id)) => write!(f, "{id}.{}", self.port),
            (None, None) => write!(f, "?.{}", self.port),
        }
    }
}

/// One candidate value of an env variable: a literal, or a template over a secret's data when
/// `id` or `name` names a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvValue {
    /// The secret's id.
    pub id: Option<String>,
    /// The secret's name.
    pub name: Option<String>,
    /// The literal, or the template rendered with the secret's data.
    pub value: Value,
}

impl EnvValue {
    /// Whether this entry refers to a secret.
    pub fn is_secret(&self) -> bool {
        self.id.is_some() || self.name.is_some()
    }
}

/// A port name: `in`, `out`, `error`, or an indexed one such as `out[2]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortName<'a> {
    /// The name without the index.
    pub base: &'a str,
    /// The index, for `name[N]`.
    pub index: Option<usize>,
}

impl<'a> PortName<'a> {
    /// Splits `out[2]` into `out` and `2`. A malformed index (`out[x]`) is not an indexed name.
    pub fn parse(name: &'a str) -> PortName<'a> {
        if let Some(open) = name.find('[')
            && let Some(inner) = name[open + 1..].strip_suffix(']')
            && let Ok(index) = inner.parse::<usize>()
            && open > 0
        {
            return PortName {
                base: &name[..open],
                index: Some(index),
            };
        }
        PortName {
            base: name,
            index: None,
        }
    }

    /// The index when the name is `base[N]`, or `0` when it is the bare `base` and `bare_is_zero`
    /// (upstream treats `out` as `out[0]` on nodes with indexed outputs).
    pub fn index_of(&self, base: &str, bare_is_zero: bool) -> Option<usize> {
        if self.base != base {
            return None;
        }
        match self.index {
            Some(i) => Some(i),
            None if bare_is_zero => Some(0),
            None => None,
        }
    }
}

impl Spec {
    /// How diagnostics name this spec: its name, else its id, else its position.
    pub fn label(&self, position: usize) -> String {
        match (&self.name, &self.id) {
            (Some(name), _) => name.clone(),
            (None, Some(id)) => id.clone(),
            (None, None) => format!("#{position}"),
        }
    }

    /// Reads a spec from a map value, reporting every malformed common key.
    ///
    /// # Errors
    /// The problems found, each naming `label` and the field.
    pub fn from_value(value: &Value, label: &str) -> Result<Spec, Vec<Diagnostic>> {
        Spec::from_value_in(value, label, DEFAULT_NAMESPACE)
    }

    /// Like [`Spec::from_value`], with `namespace` for a spec that names none.
    ///
    /// # Errors
    /// The problems found, each naming `label` and the field.
    pub fn from_value_in(
        value: &Value,
        label: &str,
        namespace: &str,
    ) -> Result<Spec, Vec<Diagnostic>> {
        let Some(map) = value.as_map() else {
            return Err(vec![Diagnostic::new(
                label,
                "",
                format!("a spec must be a map, found {}", value.kind_name()),
            )]);
        };
        let mut problems = Vec::new();
        let mut spec = Spec {
            namespace: namespace.to_owned(),
            ..Spec::default()
        };
        let mut fields = Vec::new();
        let mut kind = None;
        for (key, v) in map.iter() {
            let Some(key_str) = key.as_str() else {
                fields.push((key.clone(), v.clone()));
                continue;
            };
            match key_str {
                "id" => spec.id = optional_string(v, label, "id", &mut problems),
                "kind" => kind = optional_string(v, label, "kind", &mut problems),
                "namespace" => {
                    if let Some(ns) = optional_string(v, label, "namespace", &mut problems) {
                        spec.namespace = ns;
                    }
                }
                "name" => spec.name = optional_string(v, label, "name", &mut problems),
                "annotations" => {
                    match decode::<BTreeMap<String, String>>(v, label, "annotations") {
                        Ok(a) => spec.annotations = a,
                        Err(d) => problems.push(d),
                    }
                }
                "ports" => spec.ports = read_ports(v, label, true, &mut problems),
                "env" => spec.env = read_env(v, label, &mut problems),
                _ => fields.push((key.clone(), v.clone())),
            }
        }
        match kind {
            Some(k) if !k.is_empty() => spec.kind = k,
            _ => problems.push(Diagnostic::new(label, "kind", "missing required field")),
        }
        spec.fields = fields.into_iter().collect();
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(problems)
        }
    }

    /// The spec as a map value, the shape it is written in.
    pub fn to_value(&self) -> Value {
        let mut entries: Vec<(Value, Value)> = self.fields.entries().to_vec();
        if let Some(id) = &self.id {
            entries.push(("id".into(), id.clone().into()));
        }
        entries.push(("kind".into(), self.kind.clone().into()));
        entries.push(("namespace".into(), self.namespace.clone().into()));
        if let Some(name) = &self.name {
            entries.push(("name".into(), name.clone().into()));
        }
        push_common(&mut entries, &self.annotations, &self.ports, &self.env);
        Value::Map(entries.into_iter().collect())
    }
}

/// Appends `annotations`, `ports` and `env` to a resource's entries, each only when non-empty:
/// the keys specs and charts share.
pub(crate) fn push_common(
    entries: &mut Vec<(Value, Value)>,
    annotations: &BTreeMap<String, String>,
    ports: &BTreeMap<String, Vec<PortRef>>,
    env: &BTreeMap<String, Vec<EnvValue>>,
) {
    if !annotations.is_empty() {
        let a: Map = annotations
            .iter()
            .map(|(k, v)| (Value::from(k.clone()), Value::from(v.clone())))
            .collect();
        entries.push(("annotations".into(), a.into()));
    }
    if !ports.is_empty() {
        let ports: Map = ports
            .iter()
            .map(|(k, refs)| {
                let refs: Vec<Value> = refs.iter().map(port_ref_value).collect();
                (Value::from(k.clone()), Value::from(refs))
            })
            .collect();
        entries.push(("ports".into(), ports.into()));
    }
    if !env.is_empty() {
        let env: Map = env
            .iter()
            .map(|(k, values)| {
                let values: Vec<Value> = values.iter().map(env_value).collect();
                (Value::from(k.clone()), Value::from(values))
            })
            .collect();
        entries.push(("env".into(), env.into()));
    }
}

fn port_ref_value(r: &PortRef) -> Value {
    let mut m = vec![("port".into(), Value::from(r.port.clone()))];
    if let Some(id) = &r.id {
        m.push(("id".into(), id.clone().into()));
    }
    if let Some(name) = &r.name {
        m.push(("name".into(), name.clone().into()));
    }
    Value::Map(m.into_iter().collect())
}

fn env_value(e: &EnvValue) -> Value {
    let mut m = vec![("value".into(), e.value.clone())];
    if let Some(id) = &e.id {
        m.push(("id".into(), id.clone().into()));
    }
    if let Some(name) = &e.name {
        m.push(("name".into(), name.clone().into()));
    }
    Value::Map(m.into_iter().collect())
}

pub(crate) fn optional_string(
    v: &Value,
    label: &str,
    field: &str,
    problems: &mut Vec<Diagnostic>,
) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.to_string()),
        other => {
            problems.push(Diagnostic::new(
                label,
                field,
                format!("expected a string, found {}", other.kind_name()),
            ));
            None
        }
    }
}

/// Reads `ports`. A spec's link must name its target (`name` or `id`); a chart's port may name
/// neither, which means every inner node (`needs_target` false).
pub(crate) fn read_ports(
    v: &Value,
    label: &str,
    needs_target: bool,
    problems: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Vec<PortRef>> {
    let mut ports = BTreeMap::new();
    let map = match v {
        Value::Null => return ports,
        Value::Map(m) => m,
        other => {
            problems.push(Diagnostic::new(
                label,
                "ports",
                format!(
                    "expected a map of port name to targets, found {}",
                    other.kind_name()
                ),
            ));
            return ports;
        }
    };
    for (name, targets) in map.iter() {
        let Some(name) = name.as_str() else {
            problems.push(Diagnostic::new(
                label,
                "ports",
                "port names must be strings",
            ));
            continue;
        };
        let targets: &[Value] = match targets {
            Value::List(l) => l,
            single => std::slice::from_ref(single),
        };
        let mut refs = Vec::with_capacity(targets.len());
        for (i, t) in targets.iter().enumerate() {
            let path = format!("ports.{name}[{i}]");
            let Some(t) = t.as_map() else {
                problems.push(Diagnostic::new(
                    label,
                    path,
                    "expected a map `{name|id, port}`",
                ));
                continue;
            };
            let text = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_owned);
            let r = PortRef {
                id: text("id"),
                name: text("name"),
                port: text("port").unwrap_or_default(),
            };
            if r.port.is_empty() {
                problems.push(Diagnostic::new(
                    label,
                    format!("{path}.port"),
                    "missing required field",
                ));
            }
            if needs_target && r.id.is_none() && r.name.is_none() {
                problems.push(Diagnostic::new(label, path, "a link needs `name` or `id`"));
            }
            refs.push(r);
        }
        ports.insert(name.to_owned(), refs);
    }
    ports
}

pub(crate) fn read_env(
    v: &Value,
    label: &str,
    problems: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Vec<EnvValue>> {
    let mut env = BTreeMap::new();
    let map = match v {
        Value::Null => return env,
        Value::Map(m) => m,
        other => {
            problems.push(Diagnostic::new(
                label,
                "env",
                format!(
                    "expected a map of variable to values, found {}",
                    other.kind_name()
                ),
            ));
            return env;
        }
    };
    for (key, values) in map.iter() {
        let Some(key) = key.as_str() else {
            problems.push(Diagnostic::new(
                label,
                "env",
                "variable names must be strings",
            ));
            continue;
        };
        // Upstream's Oct 2024 form is a list of `{id?, name?, value}`; its later form is one
        // `{id?, name?, data}`. Both are accepted.
        let entries: &[Value] = match values {
            Value::List(l) => l,
            single => std::slice::from_ref(single),
        };
        let mut out = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let path = format!("env.{key}[{i}]");
            let Some(m) = e.as_map() else {
                problems.push(Diagnostic::new(
                    label,
                    path,
                    "expected a map `{id?, name?, value}`",
                ));
                continue;
            };
            let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
            let Some(value) = m.get("value").or_else(|| m.get("data")) else {
                problems.push(Diagnostic::new(
                    label,
                    format!("{path}.value"),
                    "missing required field",
                ));
                continue;
            };
            out.push(EnvValue {
                id: text("id"),
                name: text("name"),
                value: value.clone(),
            });
        }
        env.insert(key.to_owned(), out);
    }
    env
}

/// Decodes a kind's typed struct from its fields, naming the field path on failure.
///
/// # Errors
/// A diagnostic naming `label` and the path below `prefix` (e.g. `routes[1].port`).
pub fn decode<T: DeserializeOwned>(
    value: &Value,
    label: &str,
    prefix: &str,
) -> Result<T, Diagnostic> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix.is_empty(), inner.as_str()) {
            (_, ".") => prefix.to_owned(),
            (true, p) => p.to_owned(),
            (false, p) => format!("{prefix}.{p}"),
        };
        let message = e.into_inner().to_string();
        // serde reports a missing field at its parent; name the field itself instead.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            let path = if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            };
            return Diagnostic::new(label, path, "missing required field");
        }
        Diagnostic::new(label, path, message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<Spec, Vec<Diagnostic>> {
        let v: Value = yaml_serde::from_str(yaml).unwrap();
        Spec::from_value(&v, "s")
    }

    #[test]
    fn common_keys_and_fields_split() {
        let s = spec("kind: snippet\nname: a\nlanguage: text\ncode: hi\nports: {out: [{name: b, port: in}]}\n").unwrap();
        assert_eq!(s.kind, "snippet");
        assert_eq!(s.namespace, DEFAULT_NAMESPACE);
        assert_eq!(s.fields.get("code"), Some(&Value::from("hi")));
        assert_eq!(s.fields.get("name"), None);
        assert_eq!(
            s.ports["out"][0],
            PortRef {
                id: None,
                name: Some("b".into()),
                port: "in".into()
            }
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let errs = spec("name: a\nports: {out: [{name: b}, {port: in}]}\nenv: {X: [{name: s}]}\n")
            .unwrap_err();
        let paths: Vec<_> = errs.iter().map(|d| d.path.as_str()).collect();
        // Keys are visited in sorted order, and a missing kind is reported last.
        assert_eq!(
            paths,
            [
                "env.X[0].value",
                "ports.out[0].port",
                "ports.out[1]",
                "kind"
            ]
        );
    }

    #[test]
    fn port_names_parse() {
        assert_eq!(
            PortName::parse("out[12]"),
            PortName {
                base: "out",
                index: Some(12)
            }
        );
        assert_eq!(
            PortName::parse("out"),
            PortName {
                base: "out",
                index: None
            }
        );
        assert_eq!(
            PortName::parse("out[x]"),
            PortName {
                base: "out[x]",
                index: None
            }
        );
        assert_eq!(PortName::parse("out").index_of("out", true), Some(0));
        assert_eq!(PortName::parse("out").index_of("out", false), None);
        assert_eq!(PortName::parse("in[1]").index_of("out", true), None);
    }

    #[test]
    fn decode_names_the_nested_path() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Route {
            method: String,
            port: String,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Router {
            routes: Vec<Route>,
        }
        let v: Value =
            yaml_serde::from_str("routes: [{method: GET, port: a}, {method: GET}]").unwrap();
        let d = decode::<Router>(&v, "router", "").unwrap_err();
        assert_eq!(d.path, "routes[1].port");
        assert_eq!(d.message, "missing required field");
    }

    #[test]
    fn round_trips_through_value() {
        let s = spec("kind: snippet\nname: a\ncode: hi\nenv: {X: [{value: 1}]}\nports: {out: [{id: x, port: in}]}\n").unwrap();
        let back = Spec::from_value(&s.to_value(), "s").unwrap();
        assert_eq!(s, back);
    }
}
