//! Checks over a set of specs that need no compiled node: unique names and ids, and links
//! that point at a node that exists. Whether the linked *port* exists is the runtime's check,
//! since only a compiled node knows its ports.

use std::collections::{HashMap, HashSet};

use crate::{Diagnostic, Spec};

/// Every duplicate name or id and every link to a missing node, in spec order.
pub fn check(specs: &[Spec]) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let mut names: HashMap<(&str, &str), usize> = HashMap::new();
    let mut ids: HashSet<&str> = HashSet::new();
    for (i, spec) in specs.iter().enumerate() {
        if let Some(name) = &spec.name
            && let Some(first) = names.insert((&spec.namespace, name), i)
        {
            problems.push(Diagnostic::new(
                spec.label(i),
                "name",
                format!(
                    "duplicate name `{name}` in namespace `{}` (first used by spec #{first})",
                    spec.namespace
                ),
            ));
        }
        if let Some(id) = &spec.id
            && !ids.insert(id)
        {
            problems.push(Diagnostic::new(
                spec.label(i),
                "id",
                format!("duplicate id `{id}`"),
            ));
        }
    }
    for (i, spec) in specs.iter().enumerate() {
        for (port, targets) in &spec.ports {
            for (j, target) in targets.iter().enumerate() {
                let found = specs.iter().any(|s| {
                    s.namespace == spec.namespace
                        && match (&target.id, &target.name) {
                            (Some(id), _) => s.id.as_deref() == Some(id),
                            (None, Some(name)) => s.name.as_deref() == Some(name),
                            (None, None) => false,
                        }
                });
                if !found && (target.id.is_some() || target.name.is_some()) {
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
            text[0].contains("duplicate name `a` in namespace `default`"),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains("field `ports.out[1]`") && text[1].contains("no node `ghost`"),
            "{}",
            text[1]
        );
    }
}
