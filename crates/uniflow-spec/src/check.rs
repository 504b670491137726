//! Checks over a set of specs that need no compiled node: unique names and ids, and links
//! that point at a node that exists. Whether the linked *port* exists is the runtime's check,
//! since only a compiled node knows its ports.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use crate::{Diagnostic, Spec};

/// Every duplicate name or id and every link to a missing node, in spec order.
///
/// Linear in the number of specs and links: names and ids are looked up in hash maps built in
/// one pass, so a file of 100,000 specs is checked as quickly as it is read.
pub fn check(specs: &[Spec]) -> Vec<Diagnostic> {
    checked(specs, true)
}

/// Every duplicate name or id: [`check`] without the links, for a set of specs where a link to
/// a missing node is allowed (a live namespace, whose flows may arrive file by file).
pub fn check_unique(specs: &[Spec]) -> Vec<Diagnostic> {
    checked(specs, false)
}

fn checked(specs: &[Spec], links: bool) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    // (namespace, name) and (namespace, id) -> the first spec that has it.
    let mut names: HashMap<(&str, &str), usize> = HashMap::with_capacity(specs.len());
    let mut ids: HashMap<(&str, &str), usize> = HashMap::new();
    let mut all_ids: HashSet<&str> = HashSet::new();
    for (i, spec) in specs.iter().enumerate() {
        if let Some(name) = &spec.name {
            match names.entry((&spec.namespace, name)) {
                Entry::Vacant(v) => {
                    v.insert(i);
                }
                Entry::Occupied(first) => problems.push(Diagnostic::new(
                    spec.label(i),
                    "name",
                    format!(
                        "duplicate name `{name}` in namespace `{}`: specs #{} and #{i} both have it",
                        spec.namespace,
                        first.get()
                    ),
                )),
            }
        }
        if let Some(id) = &spec.id {
            if !all_ids.insert(id) {
                problems.push(Diagnostic::new(
                    spec.label(i),
                    "id",
                    format!("duplicate id `{id}`"),
                ));
            }
            ids.entry((&spec.namespace, id)).or_insert(i);
        }
    }
    if !links {
        return problems;
    }
    for (i, spec) in specs.iter().enumerate() {
        for (port, targets) in &spec.ports {
            for (j, target) in targets.iter().enumerate() {
                let found = match (&target.id, &target.name) {
                    (Some(id), _) => ids.contains_key(&(spec.namespace.as_str(), id.as_str())),
                    (None, Some(name)) => {
                        names.contains_key(&(spec.namespace.as_str(), name.as_str()))
                    }
                    // A link naming no node is the spec reader's to report.
                    (None, None) => true,
                };
                if !found {
                    problems.push(Diagnostic::new(
                        spec.label(i),
                        format!("ports.{port}[{j}]"),
                        format!(
                            "links to `{target}`, but no node `{}` exists in namespace `{}`",
                            target
                                .name
                                .as_deref()
                                .or(target.id.as_deref())
                                .unwrap_or_default(),
                            spec.namespace
                        ),
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, parse};

    #[test]
    fn duplicates_and_dangling_links_are_all_reported() {
        let specs = parse(
            "- {kind: nop, name: a, ports: {out: [{name: b, port: in}, {name: ghost, port: in}]}}\n\
             - {kind: nop, name: b}\n\
             - {kind: nop, name: a}\n\
             - {kind: nop, name: a, namespace: other}\n",
            Format::Yaml,
            None,
        )
        .unwrap();
        let problems = check(&specs);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:#?}");
        assert!(
            text[0].contains("spec `a` field `name`: duplicate name `a` in namespace `default`")
                && text[0].contains("specs #0 and #2"),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains("field `ports.out[1]`") && text[1].contains("no node `ghost`"),
            "{}",
            text[1]
        );
    }

    /// Names and ids are found through an index; with 20,000 specs every link must still be
    /// resolved the way a scan would, namespace and all.
    #[test]
    fn links_resolve_by_name_and_id_within_their_namespace_at_20k_specs() {
        let mut yaml = String::new();
        for i in 0..20_000 {
            let ns = if i % 2 == 0 { "even" } else { "odd" };
            // Each spec links to the one two ahead (same namespace) by name, and to itself by
            // id; the last two of each namespace link to names that do not exist.
            yaml.push_str(&format!(
                "- {{kind: nop, id: id{i}, name: n{i}, namespace: {ns}, ports: {{out: [{{name: n{}, port: in}}, {{id: id{i}, port: in}}]}}}}\n",
                i + 2
            ));
        }
        // Same name and id in another namespace: found there, not here.
        yaml.push_str("- {kind: nop, name: lonely, namespace: other, ports: {out: [{name: n1, port: in}, {id: id1, port: in}]}}\n");
        let specs = parse(&yaml, Format::Yaml, None).unwrap();
        let text: Vec<String> = check(&specs).iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "spec `n19998` field `ports.out[0]`: links to `n20000.in`, but no node `n20000` exists in namespace `even`",
                "spec `n19999` field `ports.out[0]`: links to `n20001.in`, but no node `n20001` exists in namespace `odd`",
                "spec `lonely` field `ports.out[0]`: links to `n1.in`, but no node `n1` exists in namespace `other`",
                "spec `lonely` field `ports.out[1]`: links to `id1.in`, but no node `id1` exists in namespace `other`",
            ]
        );
    }
}
