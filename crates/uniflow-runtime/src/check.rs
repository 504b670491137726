//! Checking specs before they are stored or started, as they would load in their namespace.

use std::collections::HashSet;
use std::sync::Arc;

use uniflow_core::{Graph, Registry};
use uniflow_spec::{Diagnostic, Diagnostics, EnvValue, Spec, bind, check_unique};
use uniflow_value::Value;

use crate::Snapshot;
use crate::secrets::Secrets;

/// What a problem of a spec with `{{ }}` templates but no env adds: they render only with
/// values given at start.
const UNTEMPLATED: &str = " (the spec has `{{ }}` templates but no env: they render only with `uniflow start -e KEY=VALUE`)";

/// Where the links of checked specs may lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Only to the checked specs: a file started on its own (`start --from-specs`).
    Within,
    /// Also to the namespace's specs; a link to a node in neither is a warning, since flows may
    /// be applied file by file (`apply`).
    Namespace,
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct Checked {
    /// What keeps the specs from loading.
    pub errors: Diagnostics,
    /// What is worth a word but loads (a link to a node not there yet, a chart named like a
    /// built-in kind).
    pub warnings: Vec<Diagnostic>,
}

/// Checks `specs` as they would load in a namespace holding `around` (its secrets and charts;
/// its specs, for [`Links::Namespace`]), with `env` below each spec's own (see
/// [`Options::env`](crate::Options::env)): their fields, kinds, templates and snippet code, and
/// their links.
pub fn check(
    registry: &Registry,
    specs: &[Spec],
    around: &Snapshot,
    env: &[(String, Value)],
    links: Links,
) -> Checked {
    let secrets = Arc::new(Secrets::new(around.secrets.clone()));
    let mut registry = registry.clone();
    let charts = crate::chart::register(&mut registry, &around.charts, &secrets);
    let warnings = charts.cycles.into_iter().chain(charts.shadowed).collect();
    let lookup = |entry: &EnvValue, namespace: &str| secrets.lookup(entry, namespace);
    let specs = crate::with_env(specs.to_vec(), env);
    let mut checked = Checked {
        errors: Diagnostics::default(),
        warnings,
    };
    if links == Links::Within {
        // Specs whose `{{ }}` render only with `-e` values: their problems say so.
        let untemplated: HashSet<String> = specs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.env.is_empty() && has_template(&Value::Map(s.fields.clone())))
            .map(|(i, s)| s.label(i))
            .collect();
        if let Err(mut errors) = Graph::compile(specs, &registry, &lookup) {
            for d in &mut errors.0 {
                if d.spec.as_ref().is_some_and(|s| untemplated.contains(s)) {
                    d.message.push_str(UNTEMPLATED);
                }
            }
            checked.errors = errors;
        }
        return redacted(checked, &secrets);
    }
    checked.errors.extend(check_unique(&specs));
    for (i, spec) in specs.iter().enumerate() {
        let label = spec.label(i);
        match bind(spec, &label, &lookup) {
            Ok(bound) => match registry.compile(&bound, &label) {
                Ok(_) => {}
                // Its templates render only where `start -e KEY=VALUE` gives their values:
                // what fails here may load there.
                Err(ds)
                    if spec.env.is_empty() && has_template(&Value::Map(spec.fields.clone())) =>
                {
                    checked.warnings.extend(ds.into_iter().map(|mut d| {
                        d.message.push_str(UNTEMPLATED);
                        d
                    }));
                }
                Err(ds) => checked.errors.extend(ds),
            },
            Err(ds) => checked.errors.extend(ds),
        }
    }
    let known: HashSet<(&str, &str)> = specs
        .iter()
        .chain(&around.specs)
        .flat_map(|s| {
            let ns = s.namespace.as_str();
            s.id.iter()
                .map(move |id| (ns, id.as_str()))
                .chain(s.name.iter().map(move |n| (ns, n.as_str())))
        })
        .collect();
    for (i, spec) in specs.iter().enumerate() {
        for (port, refs) in &spec.ports {
            for (j, r) in refs.iter().enumerate() {
                let Some(target) = r.id.as_deref().or(r.name.as_deref()) else {
                    continue;
                };
                if !known.contains(&(spec.namespace.as_str(), target)) {
                    checked.warnings.push(Diagnostic::new(
                        spec.label(i),
                        format!("ports.{port}[{j}]"),
                        format!(
                            "links to `{r}`, but namespace `{}` has no node `{target}` yet: the link answers an error until it has",
                            spec.namespace
                        ),
                    ));
                }
            }
        }
    }
    redacted(checked, &secrets)
}

/// `checked` with every secret value masked in its messages.
fn redacted(mut checked: Checked, secrets: &Secrets) -> Checked {
    for d in checked.errors.0.iter_mut().chain(&mut checked.warnings) {
        d.message = secrets.redact(&d.message);
    }
    checked
}

/// Checks charts before they are stored, beside the namespace's `around`: a chart that
/// includes itself is an error; one named like a built-in kind a warning.
pub fn check_charts(
    registry: &Registry,
    charts: &[uniflow_spec::Chart],
    around: &[uniflow_spec::Chart],
) -> Checked {
    // The new versions replace the stored ones of the same name.
    let mut all: Vec<uniflow_spec::Chart> = around
        .iter()
        .filter(|c| {
            !charts
                .iter()
                .any(|n| n.name == c.name && n.namespace == c.namespace)
        })
        .cloned()
        .collect();
    all.extend(charts.iter().cloned());
    let mut registry = registry.clone();
    let secrets = Arc::new(Secrets::default());
    let problems = crate::chart::register(&mut registry, &all, &secrets);
    Checked {
        errors: Diagnostics(problems.cycles),
        warnings: problems.shadowed,
    }
}

/// Whether a string inside `value` holds a `{{` template.
fn has_template(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("{{"),
        Value::List(items) => items.iter().any(has_template),
        Value::Map(map) => map.iter().any(|(k, v)| has_template(k) || has_template(v)),
        _ => false,
    }
}
