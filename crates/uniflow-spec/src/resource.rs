//! The three kinds of stored resource: specs, secrets and charts, and what a store needs to know
//! about each ([`Resource`]).
//!
//! A secret is data that env entries template against; a chart is a node kind made of specs.
//! Both are read and written as maps, like a spec: [`Secret::from_value`] reports every
//! malformed key at once, and `to_value` gives back the shape they are written in.

use std::collections::BTreeMap;
use std::fmt;

use uniflow_value::Value;

use crate::spec::{optional_string, push_common, read_env, read_ports};
use crate::{DEFAULT_NAMESPACE, Diagnostic, EnvValue, PortRef, Spec, decode};

/// Which table a resource lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// Node specs.
    Specs,
    /// Secrets.
    Secrets,
    /// Charts.
    Charts,
}

impl ResourceKind {
    /// Every kind, in the order they load: secrets and charts before the specs that use them.
    pub const ALL: [ResourceKind; 3] = [
        ResourceKind::Secrets,
        ResourceKind::Charts,
        ResourceKind::Specs,
    ];

    /// The plural name the CLI and the store use: `specs`, `secrets` or `charts`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Specs => "specs",
            ResourceKind::Secrets => "secrets",
            ResourceKind::Charts => "charts",
        }
    }

    /// One resource of the kind, for messages: `spec`, `secret` or `chart`.
    pub const fn singular(self) -> &'static str {
        match self {
            ResourceKind::Specs => "spec",
            ResourceKind::Secrets => "secret",
            ResourceKind::Charts => "chart",
        }
    }

    /// The kind named `specs`, `secrets` or `charts` (what [`ResourceKind::as_str`] gives).
    pub fn parse(name: &str) -> Option<ResourceKind> {
        ResourceKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a store needs of a resource: its kind, its keys, and its map form.
pub trait Resource: Clone + Send + Sync + 'static {
    /// The table the resource lives in.
    const KIND: ResourceKind;
    /// Its id, once it has one.
    fn id(&self) -> Option<&str>;
    /// Gives it an id (the store does, for a new resource).
    fn set_id(&mut self, id: String);
    /// Its namespace; an empty one means [`DEFAULT_NAMESPACE`] to a store.
    fn namespace(&self) -> &str;
    /// Moves it to a namespace (the store fills in [`DEFAULT_NAMESPACE`]).
    fn set_namespace(&mut self, namespace: String);
    /// Its name, unique per kind and namespace.
    fn name(&self) -> Option<&str>;
    /// The resource as a map value, the shape it is written in.
    fn to_value(&self) -> Value;
    /// Reads a resource from a map value; a missing namespace is [`DEFAULT_NAMESPACE`].
    ///
    /// # Errors
    /// Every problem found, each naming `label` and the field.
    fn from_value(value: &Value, label: &str) -> Result<Self, Vec<Diagnostic>>;
    /// The required fields this resource lacks, which [`Resource::from_value`] would refuse:
    /// a store refuses to keep what it could not read back. Cheap: no conversion.
    ///
    /// # Errors
    /// Each missing field, naming `label`.
    fn validate(&self, label: &str) -> Result<(), Vec<Diagnostic>> {
        let _ = label;
        Ok(())
    }
}

fn missing(label: &str, fields: &[(bool, String)]) -> Result<(), Vec<Diagnostic>> {
    let problems: Vec<Diagnostic> = fields
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, path)| Diagnostic::new(label, path.clone(), "missing required field"))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The accessors of [`Resource`] for a type with `id`, `namespace` and `name` fields and
/// inherent `to_value` and `from_value` methods, which every resource kind has; only
/// `validate` differs between them.
macro_rules! resource_accessors {
    ($ty:ident) => {
        fn id(&self) -> Option<&str> {
            self.id.as_deref()
        }

        fn set_id(&mut self, id: String) {
            self.id = Some(id);
        }

        fn namespace(&self) -> &str {
            &self.namespace
        }

        fn set_namespace(&mut self, namespace: String) {
            self.namespace = namespace;
        }

        fn name(&self) -> Option<&str> {
            self.name.as_deref()
        }

        fn to_value(&self) -> Value {
            $ty::to_value(self)
        }

        fn from_value(value: &Value, label: &str) -> Result<Self, Vec<Diagnostic>> {
            $ty::from_value(value, label)
        }
    };
}

impl Resource for Spec {
    const KIND: ResourceKind = ResourceKind::Specs;

    resource_accessors!(Spec);

    fn validate(&self, label: &str) -> Result<(), Vec<Diagnostic>> {
        missing(label, &[(!self.kind.is_empty(), "kind".to_owned())])
    }
}

/// Data that env entries refer to by id or name; `data` is what their templates render against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Secret {
    /// A UUID; the store assigns a v7 one when missing.
    pub id: Option<String>,
    /// Defaults to [`DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// Unique within its namespace when set.
    pub name: Option<String>,
    /// Free metadata.
    pub annotations: BTreeMap<String, String>,
    /// Any value (`{{ . }}` for a scalar, `{{ .password }}` for a map); required.
    pub data: Value,
}

impl Secret {
    /// Reads a secret from a map value, reporting every malformed key. Problems name the key,
    /// never the secret's data.
    ///
    /// # Errors
    /// The problems found, each naming `label` and the field.
    pub fn from_value(value: &Value, label: &str) -> Result<Secret, Vec<Diagnostic>> {
        Secret::from_value_in(value, label, DEFAULT_NAMESPACE)
    }

    /// Like [`Secret::from_value`], with `namespace` for a secret that names none.
    ///
    /// # Errors
    /// The problems found, each naming `label` and the field.
    pub fn from_value_in(
        value: &Value,
        label: &str,
        namespace: &str,
    ) -> Result<Secret, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let mut secret = Secret {
            namespace: namespace.to_owned(),
            ..Secret::default()
        };
        let mut data = None;
        for (key, v) in entries(value, "secret", label, &mut problems) {
            match key {
                "id" => secret.id = optional_string(v, label, "id", &mut problems),
                "namespace" => {
                    if let Some(ns) = optional_string(v, label, "namespace", &mut problems) {
                        secret.namespace = ns;
                    }
                }
                "name" => secret.name = optional_string(v, label, "name", &mut problems),
                "annotations" => secret.annotations = annotations(v, label, &mut problems),
                "data" => data = Some(v),
                other => problems.push(unknown(
                    label,
                    other,
                    "id, namespace, name, annotations, data",
                )),
            }
        }
        match data {
            // Upstream's decoder refused a zero value for a required field: `data: null` too.
            // A value that is no map at all has been reported already.
            Some(Value::Null) | None => {
                if value.as_map().is_some() {
                    problems.push(Diagnostic::new(label, "data", "missing required field"));
                }
            }
            Some(v) => secret.data = v.clone(),
        }
        if problems.is_empty() {
            Ok(secret)
        } else {
            Err(problems)
        }
    }

    /// The secret as a map value, the shape it is written in.
    pub fn to_value(&self) -> Value {
        let mut entries: Vec<(Value, Value)> = Vec::with_capacity(5);
        push_keys(
            &mut entries,
            self.id.as_deref(),
            &self.namespace,
            self.name.as_deref(),
        );
        push_common(
            &mut entries,
            &self.annotations,
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        entries.push(("data".into(), self.data.clone()));
        Value::Map(entries.into_iter().collect())
    }
}

impl Resource for Secret {
    const KIND: ResourceKind = ResourceKind::Secrets;

    resource_accessors!(Secret);

    fn validate(&self, label: &str) -> Result<(), Vec<Diagnostic>> {
        missing(
            label,
            &[(!matches!(self.data, Value::Null), "data".to_owned())],
        )
    }
}

/// A node kind made of specs: its `name` becomes a kind in its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chart {
    /// A UUID; the store assigns a v7 one when missing.
    pub id: Option<String>,
    /// Defaults to [`DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// The kind the chart defines; required.
    pub name: Option<String>,
    /// Free metadata.
    pub annotations: BTreeMap<String, String>,
    /// The inner specs, linked among themselves.
    pub specs: Vec<Spec>,
    /// External port name to the inner ports it stands for; an entry naming no node means
    /// every inner node.
    pub ports: BTreeMap<String, Vec<PortRef>>,
    /// Variables for the inner specs, in the forms a spec's `env` takes.
    pub env: BTreeMap<String, Vec<EnvValue>>,
}

impl Chart {
    /// Reads a chart from a map value, reporting every malformed key, inner specs included
    /// (as `specs[N].field`).
    ///
    /// # Errors
    /// The problems found, each naming `label` and the field.
    pub fn from_value(value: &Value, label: &str) -> Result<Chart, Vec<Diagnostic>> {
        Chart::from_value_in(value, label, DEFAULT_NAMESPACE)
    }

    /// Like [`Chart::from_value`], with `namespace` for a chart that names none. Inner specs
    /// naming no namespace take the chart's.
    ///
    /// # Errors
    /// The problems found, each naming `label` and the field.
    pub fn from_value_in(
        value: &Value,
        label: &str,
        namespace: &str,
    ) -> Result<Chart, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let mut chart = Chart {
            namespace: namespace.to_owned(),
            ..Chart::default()
        };
        let mut specs = None;
        for (key, v) in entries(value, "chart", label, &mut problems) {
            match key {
                "id" => chart.id = optional_string(v, label, "id", &mut problems),
                "namespace" => {
                    if let Some(ns) = optional_string(v, label, "namespace", &mut problems) {
                        chart.namespace = ns;
                    }
                }
                "name" => chart.name = optional_string(v, label, "name", &mut problems),
                "annotations" => chart.annotations = annotations(v, label, &mut problems),
                "specs" => specs = Some(v),
                "ports" => chart.ports = read_ports(v, label, false, &mut problems),
                "env" => chart.env = read_env(v, label, &mut problems),
                other => problems.push(unknown(
                    label,
                    other,
                    "id, namespace, name, annotations, specs, ports, env",
                )),
            }
        }
        if let Some(specs) = specs {
            chart.specs = inner_specs(specs, label, &chart.namespace, &mut problems);
        }
        if value.as_map().is_some() && chart.name.as_deref().is_none_or(str::is_empty) {
            problems.push(Diagnostic::new(label, "name", "missing required field"));
        }
        if problems.is_empty() {
            Ok(chart)
        } else {
            Err(problems)
        }
    }

    /// The chart as a map value, the shape it is written in.
    pub fn to_value(&self) -> Value {
        let mut entries: Vec<(Value, Value)> = Vec::with_capacity(7);
        push_keys(
            &mut entries,
            self.id.as_deref(),
            &self.namespace,
            self.name.as_deref(),
        );
        push_common(&mut entries, &self.annotations, &self.ports, &self.env);
        if !self.specs.is_empty() {
            let specs: Vec<Value> = self.specs.iter().map(Spec::to_value).collect();
            entries.push(("specs".into(), specs.into()));
        }
        Value::Map(entries.into_iter().collect())
    }
}

impl Resource for Chart {
    const KIND: ResourceKind = ResourceKind::Charts;

    resource_accessors!(Chart);

    fn validate(&self, label: &str) -> Result<(), Vec<Diagnostic>> {
        let mut fields = vec![(
            self.name.as_deref().is_some_and(|n| !n.is_empty()),
            "name".to_owned(),
        )];
        for (i, spec) in self.specs.iter().enumerate() {
            fields.push((!spec.kind.is_empty(), format!("specs[{i}].kind")));
        }
        missing(label, &fields)
    }
}

/// The string-keyed entries of a resource's map; a non-map (or a non-string key) is a problem.
fn entries<'a>(
    value: &'a Value,
    what: &str,
    label: &str,
    problems: &mut Vec<Diagnostic>,
) -> Vec<(&'a str, &'a Value)> {
    let Some(map) = value.as_map() else {
        problems.push(Diagnostic::new(
            label,
            "",
            format!("a {what} must be a map, found {}", value.kind_name()),
        ));
        return Vec::new();
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, v) in map.iter() {
        match key.as_str() {
            Some(k) => out.push((k, v)),
            None => problems.push(Diagnostic::new(
                label,
                "",
                format!("keys must be strings, found {}", key.kind_name()),
            )),
        }
    }
    out
}

fn annotations(v: &Value, label: &str, problems: &mut Vec<Diagnostic>) -> BTreeMap<String, String> {
    decode::<BTreeMap<String, String>>(v, label, "annotations").unwrap_or_else(|d| {
        problems.push(d);
        BTreeMap::new()
    })
}

fn unknown(label: &str, key: &str, known: &str) -> Diagnostic {
    Diagnostic::new(
        label,
        key,
        format!("unknown field (expected one of {known})"),
    )
}

fn push_keys(
    entries: &mut Vec<(Value, Value)>,
    id: Option<&str>,
    namespace: &str,
    name: Option<&str>,
) {
    if let Some(id) = id {
        entries.push(("id".into(), id.to_owned().into()));
    }
    entries.push(("namespace".into(), namespace.to_owned().into()));
    if let Some(name) = name {
        entries.push(("name".into(), name.to_owned().into()));
    }
}

/// A chart's `specs`: a list (or one spec), each read like a spec file's entry, its problems
/// placed under `specs[N]`.
fn inner_specs(
    v: &Value,
    label: &str,
    namespace: &str,
    problems: &mut Vec<Diagnostic>,
) -> Vec<Spec> {
    let items: &[Value] = match v {
        Value::Null => &[],
        Value::List(l) => l,
        single => std::slice::from_ref(single),
    };
    let mut specs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match Spec::from_value_in(item, label, namespace) {
            Ok(spec) => specs.push(spec),
            Err(ds) => problems.extend(ds.into_iter().map(|mut d| {
                d.path = if d.path.is_empty() {
                    format!("specs[{i}]")
                } else {
                    format!("specs[{i}].{}", d.path)
                };
                d
            })),
        }
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(yaml: &str) -> Value {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn secrets_round_trip_and_default_their_namespace() {
        let s = Secret::from_value(
            &value("name: db\ndata: {password: x}\nannotations: {a: b}\n"),
            "db",
        )
        .unwrap();
        assert_eq!(s.namespace, DEFAULT_NAMESPACE);
        assert_eq!(s.data.get("password"), Some(&Value::from("x")));
        assert_eq!(Secret::from_value(&s.to_value(), "db").unwrap(), s);
        // Scalar data is data too.
        let s = Secret::from_value(&value("id: x\ndata: 3\n"), "x").unwrap();
        assert_eq!(s.data, Value::Int(3));
    }

    #[test]
    fn secret_problems_are_all_reported_without_the_data() {
        let errs = Secret::from_value(&value("name: [1]\nnamespace: 2\ndate: hunter2\n"), "s")
            .unwrap_err();
        let paths: Vec<_> = errs.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["date", "name", "namespace", "data"]);
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(!text.concat().contains("hunter2"), "{text:?}");
        let errs = Secret::from_value(&value("name: a\ndata: null\n"), "a").unwrap_err();
        assert_eq!(errs[0].path, "data");
        let errs = Secret::from_value(&value("[1]"), "a").unwrap_err();
        assert_eq!(errs[0].message, "a secret must be a map, found list");
    }

    #[test]
    fn charts_round_trip_with_specs_ports_and_both_env_forms() {
        let c = Chart::from_value(
            &value(
                "name: greet\nnamespace: n\nspecs:\n  - {kind: snippet, name: s, code: hi}\n\
                 ports: {in: [{name: s, port: in}], out: [{port: out}]}\n\
                 env: {A: [{value: 1}], B: {name: sec, data: '{{ . }}'}}\n",
            ),
            "greet",
        )
        .unwrap();
        assert_eq!(c.specs.len(), 1);
        assert_eq!(c.specs[0].namespace, "n");
        // A chart port may name no node: it stands for every inner node.
        assert_eq!(c.ports["out"][0].name, None);
        assert_eq!(c.env["B"][0].name.as_deref(), Some("sec"));
        assert_eq!(Chart::from_value(&c.to_value(), "greet").unwrap(), c);
    }

    #[test]
    fn chart_problems_name_inner_specs() {
        let errs = Chart::from_value(
            &value("specs: [{kind: nop}, {name: x}]\nenv: {A: [{}]}\nwhat: 1\n"),
            "c",
        )
        .unwrap_err();
        let paths: Vec<_> = errs.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["env.A[0].value", "what", "specs[1].kind", "name"]);
    }

    #[test]
    fn validate_finds_what_from_value_would_refuse() {
        assert!(Spec::default().validate("s").is_err());
        assert!(Secret::default().validate("s").is_err());
        let chart = Chart {
            specs: vec![Spec::default()],
            ..Chart::default()
        };
        let paths: Vec<String> = chart
            .validate("c")
            .unwrap_err()
            .into_iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(paths, ["name", "specs[0].kind"]);
        for problems in [
            Spec::from_value(&Spec::default().to_value(), "s").err(),
            Secret::from_value(&Secret::default().to_value(), "s").err(),
            Chart::from_value(&chart.to_value(), "c").err(),
        ] {
            assert!(problems.is_some());
        }
        let ok = Chart {
            name: Some("c".into()),
            ..Chart::default()
        };
        assert_eq!(ok.validate("c"), Ok(()));
    }

    #[test]
    fn kinds_name_themselves() {
        for kind in ResourceKind::ALL {
            assert_eq!(ResourceKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ResourceKind::parse("values"), None);
        assert_eq!(<Chart as Resource>::KIND.singular(), "chart");
    }
}
