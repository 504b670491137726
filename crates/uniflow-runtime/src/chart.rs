//! Charts: composite kinds defined in the store. A chart's name becomes a kind in its
//! namespace; an instance (a spec of that kind) compiles the chart's specs into a
//! [`Subgraph`] (the instance's node), with the chart's env templated against the instance's spec.
//!
//! Chart env entries that name a secret take the secret's data; literal ones are templated
//! against the instance spec as a map (`{{ .word }}` reads the instance's field `word`). Each
//! inner spec gets the chart's env as literals, beside its own, and is bound and compiled
//! like a spec at the top level, so charts may nest. Chart `ports` map an outer name to inner
//! ports: to an inner input it is an input of the instance, to an inner output an output
//! (made only when the instance links it, so an unlinked one keeps the implicit response). A
//! chart that includes itself, through any number of others, is refused with the cycle.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use uniflow_core::{CompileCx, Node, Registry, SubgraphBuilder};
use uniflow_spec::{Chart, Diagnostic, EnvValue, PortRef, Spec, bind, render};
use uniflow_value::Value;

use crate::secrets::Secrets;

/// What is wrong with a namespace's charts as a whole.
#[derive(Default)]
pub(crate) struct Problems {
    /// Charts that include themselves: their instances fail with the cycle.
    pub(crate) cycles: Vec<Diagnostic>,
    /// Charts named like a built-in kind: the built-in kind stays.
    pub(crate) shadowed: Vec<Diagnostic>,
}

/// Adds each chart to `registry` as a kind.
pub(crate) fn register(
    registry: &mut Registry,
    charts: &[Chart],
    secrets: &Arc<Secrets>,
) -> Problems {
    let mut problems = Problems::default();
    let named: BTreeMap<&str, &Chart> = charts
        .iter()
        .filter_map(|c| c.name.as_deref().map(|n| (n, c)))
        .filter(|(name, chart)| {
            if registry.contains(name) {
                problems.shadowed.push(Diagnostic::new(
                    *name,
                    "name",
                    format!(
                        "chart `{name}` in namespace `{}` has the name of a built-in kind, which stays in use",
                        chart.namespace
                    ),
                ));
                return false;
            }
            true
        })
        .collect();
    for (&name, &chart) in &named {
        let kind = name.to_owned();
        if let Some(cycle) = cycle_from(name, &named) {
            let message = format!("chart `{name}` includes itself: {}", cycle.join(" -> "));
            problems
                .cycles
                .push(Diagnostic::new(name, "specs", message.clone()));
            registry.add_with(&kind, move |_: Value, cx: &CompileCx<'_>| {
                Err(vec![cx.error("kind", message.clone())])
            });
            continue;
        }
        let chart = Arc::new(chart.clone());
        let secrets = Arc::clone(secrets);
        registry.add_with(&kind, move |_: Value, cx: &CompileCx<'_>| {
            instantiate(&chart, &secrets, cx)
        });
    }
    problems
}

/// The cycle of charts that leads from `start` back to it, if any.
fn cycle_from(start: &str, charts: &BTreeMap<&str, &Chart>) -> Option<Vec<String>> {
    fn walk<'a>(
        at: &'a str,
        start: &str,
        charts: &BTreeMap<&'a str, &'a Chart>,
        path: &mut Vec<&'a str>,
        seen: &mut Vec<&'a str>,
    ) -> bool {
        let Some(chart) = charts.get(at) else {
            return false;
        };
        for spec in &chart.specs {
            let Some((&kind, _)) = charts.get_key_value(spec.kind.as_str()) else {
                continue;
            };
            if kind == start {
                path.push(kind);
                return true;
            }
            if seen.contains(&kind) {
                continue;
            }
            seen.push(kind);
            path.push(kind);
            if walk(kind, start, charts, path, seen) {
                return true;
            }
            path.pop();
        }
        false
    }
    let (&start, _) = charts.get_key_value(start)?;
    let mut path = vec![start];
    walk(start, start, charts, &mut path, &mut Vec::new())
        .then(|| path.into_iter().map(str::to_owned).collect())
}

/// What each chart is built from, its secrets' data and the charts it includes among it: an
/// instance whose chart's fingerprint changed is built again.
pub(crate) fn fingerprints(charts: &[Chart], secrets: &Secrets) -> HashMap<String, Value> {
    let own: HashMap<&str, (Value, Vec<&str>)> = charts
        .iter()
        .filter_map(|chart| {
            let name = chart.name.as_deref()?;
            let entries = chart
                .env
                .values()
                .chain(chart.specs.iter().flat_map(|s| s.env.values()))
                .flatten()
                .filter(|e| e.is_secret())
                .map(|e| secrets.lookup(e, &chart.namespace).unwrap_or(Value::Null));
            let value = Value::List(std::iter::once(chart.to_value()).chain(entries).collect());
            let nested = chart.specs.iter().map(|s| s.kind.as_str()).collect();
            Some((name, (value, nested)))
        })
        .collect();
    own.keys()
        .map(|&name| {
            // Everything reachable, each once: a cycle is cut (its instances fail anyway).
            let mut reached = vec![name];
            let mut at = 0;
            while at < reached.len() {
                for &kind in &own[reached[at]].1 {
                    if own.contains_key(kind) && !reached.contains(&kind) {
                        reached.push(kind);
                    }
                }
                at += 1;
            }
            reached[1..].sort_unstable();
            let value = reached.iter().map(|n| own[n].0.clone()).collect();
            (name.to_owned(), Value::List(value))
        })
        .collect()
}

/// Compiles an instance of `chart`: its spec is `cx.spec`.
fn instantiate(
    chart: &Chart,
    secrets: &Secrets,
    cx: &CompileCx<'_>,
) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
    let instance = cx.spec;
    let env = chart_env(chart, secrets, cx)?;
    let mut problems = Vec::new();
    let mut inner = SubgraphBuilder::new();
    let mut specs = Vec::with_capacity(chart.specs.len());
    for (i, spec) in chart.specs.iter().enumerate() {
        let path = format!("specs[{i}]");
        let mut spec = spec.clone();
        spec.namespace.clone_from(&instance.namespace);
        for (key, value) in &env {
            spec.env.insert(
                key.clone(),
                vec![EnvValue {
                    id: None,
                    name: None,
                    value: value.clone(),
                }],
            );
        }
        // An inner output that the instance links must exist on the inner node, so a nested
        // composite makes it.
        for (outer, refs) in &chart.ports {
            if instance.ports.contains_key(outer) {
                let linked: Vec<String> = refs
                    .iter()
                    .filter(|r| targets(r, &spec))
                    .map(|r| r.port.clone())
                    .collect();
                for port in linked {
                    spec.ports.entry(port).or_default();
                }
            }
        }
        let bound = bind(&spec, &path, &|e, ns| secrets.lookup(e, ns))
            .and_then(|bound| cx.registry.compile(&bound, &path).map(|node| (bound, node)));
        match bound {
            Ok((bound, node)) => {
                let id = inner.add(bound.clone(), node);
                specs.push((bound, id));
            }
            Err(ds) => problems.extend(ds.into_iter().map(|d| cx.nested(&path, d))),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // The links among the chart's specs.
    for (i, (spec, from)) in specs.iter().enumerate() {
        for (name, refs) in &spec.ports {
            let Some(out) = inner.node(*from).out_port(name) else {
                if !refs.is_empty() {
                    problems.push(cx.error(
                        format!("specs[{i}].ports.{name}"),
                        format!("kind `{}` has no output port `{name}`", spec.kind),
                    ));
                }
                continue;
            };
            for (j, r) in refs.iter().enumerate() {
                let Some((_, to)) = specs.iter().find(|(s, _)| names(r, s)) else {
                    problems.push(cx.error(
                        format!("specs[{i}].ports.{name}[{j}]"),
                        format!(
                            "links to `{r}`, which is not a spec of chart `{}`",
                            instance.kind
                        ),
                    ));
                    continue;
                };
                match inner.node(*to).in_port(&r.port) {
                    Some(input) => inner.link(*from, out, *to, input),
                    None => problems.push(cx.error(
                        format!("specs[{i}].ports.{name}[{j}].port"),
                        format!("the linked node has no input port `{}`", r.port),
                    )),
                }
            }
        }
    }
    // The chart's ports: an inner input is an input of the instance, an inner output (that
    // the instance links) an output.
    for (outer, refs) in &chart.ports {
        for (j, r) in refs.iter().enumerate() {
            let mut found = false;
            for (spec, id) in specs.iter().filter(|(s, _)| targets(r, s)) {
                if let Some(input) = inner.node(*id).in_port(&r.port) {
                    inner.input(outer, *id, input);
                    found = true;
                } else if let Some(out) = inner.node(*id).out_port(&r.port) {
                    if instance.ports.contains_key(outer) {
                        inner.output(*id, out, outer);
                    }
                    found = true;
                } else if r.name.is_some() || r.id.is_some() {
                    problems.push(cx.error(
                        format!("ports.{outer}[{j}]"),
                        format!(
                            "chart `{}` maps `{outer}` to `{r}`, but kind `{}` has no port `{}`",
                            instance.kind, spec.kind, r.port
                        ),
                    ));
                    found = true;
                }
            }
            if !found {
                problems.push(cx.error(
                    format!("ports.{outer}[{j}]"),
                    format!(
                        "chart `{}` maps `{outer}` to `{r}`, which is not one of its specs' ports",
                        instance.kind
                    ),
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Box::new(inner.build()))
}

/// The chart's env for this instance: secret entries take the secret's data, literal ones are
/// templated against the instance spec; the last entry that resolves wins.
fn chart_env(
    chart: &Chart,
    secrets: &Secrets,
    cx: &CompileCx<'_>,
) -> Result<Vec<(String, Value)>, Vec<Diagnostic>> {
    let instance = cx.spec.to_value();
    let mut problems = Vec::new();
    let mut env = Vec::with_capacity(chart.env.len());
    for (key, entries) in &chart.env {
        let mut resolved = None;
        for (i, entry) in entries.iter().enumerate() {
            let data = if entry.is_secret() {
                match secrets.lookup(entry, &cx.spec.namespace) {
                    Some(data) => data,
                    None => continue,
                }
            } else {
                instance.clone()
            };
            match &entry.value {
                Value::String(template) => match render(template, &data) {
                    Ok(text) => resolved = Some(Value::from(text)),
                    Err(e) => problems.push(cx.error(format!("chart env.{key}[{i}].value"), e)),
                },
                other => resolved = Some(other.clone()),
            }
        }
        match resolved {
            Some(value) => env.push((key.clone(), value)),
            None => problems.push(cx.error(
                format!("chart env.{key}"),
                "unsupported value: no entry resolves (a referenced secret is missing)",
            )),
        }
    }
    if problems.is_empty() {
        Ok(env)
    } else {
        Err(problems)
    }
}

/// Whether the chart port entry `r` leads to `spec`: one that names no node leads to all.
fn targets(r: &PortRef, spec: &Spec) -> bool {
    (r.id.is_none() && r.name.is_none()) || names(r, spec)
}

/// Whether the link `r` names `spec`, by id or by name.
fn names(r: &PortRef, spec: &Spec) -> bool {
    match (&r.id, &r.name) {
        (Some(id), _) => spec.id.as_ref() == Some(id),
        (None, Some(name)) => spec.name.as_ref() == Some(name),
        (None, None) => false,
    }
}
