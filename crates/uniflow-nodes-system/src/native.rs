//! `native` (and `syscall`): reads and changes the store, by opcode.
//!
//! The opcode names a kind of resource (`specs`, or `nodes`; `secrets`, or `values`; `charts`)
//! and an operation. The input is a list of resources or one; `null` is one empty example,
//! which matches the runtime's namespace (upstream's matched every namespace). A resource
//! without a namespace is in the runtime's.
//!
//! - `create` stores new resources and answers them as stored (ids and namespace filled in);
//!   a name already used is `duplicated key`, and nothing is stored.
//! - `read` answers the resources matching any example (`id`, `namespace`, `name`: each one
//!   given must be equal).
//! - `update` applies each input as a JSON merge patch to the stored resource with its id, else
//!   its namespace and name, and answers the results; an input that matches nothing is left
//!   out.
//! - `delete` deletes exactly the resources given (by id, else by name) and answers them;
//!   `null`, an empty list, or an entry with neither id nor name deletes nothing.
//!
//! Specs created or updated are checked first as `uniflow apply` checks them; the problems are
//! an error naming spec and field, one problem a line (whose cause is `unsupported type` for an
//! unknown kind and `unsupported value` otherwise, the messages upstream's admin API maps to
//! 400), and nothing is stored. A name already taken is an error whose cause is `duplicated
//! key`, found by this node or by the store.

use std::collections::HashSet;

use serde::Deserialize;
use uniflow_core::{CompileCx, Cx, Flow, InPort, Node, OutPort, Packet, Registry, shape};
use uniflow_runtime::Links;
use uniflow_spec::{Chart, Diagnostic, Diagnostics, Resource, ResourceKind, Secret, Spec};
use uniflow_store::Example;
use uniflow_value::{ErrorValue, List, Value};

use crate::{System, patch};

/// The fields of a `native` spec.
#[derive(Debug, Deserialize)]
pub struct NativeSpec {
    /// `<kind>.<operation>`, e.g. `specs.create`.
    pub opcode: String,
}

/// What a `native` node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opcode {
    /// The kind of resource.
    pub kind: ResourceKind,
    /// The operation.
    pub op: Op,
}

/// An operation on resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Store new ones.
    Create,
    /// Find them.
    Read,
    /// Merge-patch stored ones.
    Update,
    /// Delete given ones.
    Delete,
}

impl Opcode {
    /// Reads `specs.create` and the like, upstream's later names included.
    ///
    /// # Errors
    /// Anything else, with the opcodes there are.
    pub fn parse(text: &str) -> Result<Opcode, String> {
        let unknown = || {
            format!(
                "unknown opcode `{text}`: expected <specs|nodes|secrets|values|charts>.<create|read|update|delete>"
            )
        };
        let (kind, op) = text.split_once('.').ok_or_else(unknown)?;
        let kind = match kind {
            "specs" | "nodes" => ResourceKind::Specs,
            "secrets" | "values" => ResourceKind::Secrets,
            "charts" => ResourceKind::Charts,
            _ => return Err(unknown()),
        };
        let op = match op {
            "create" => Op::Create,
            "read" => Op::Read,
            "update" => Op::Update,
            "delete" => Op::Delete,
            _ => return Err(unknown()),
        };
        Ok(Opcode { kind, op })
    }
}

/// Adds `native` and `syscall`.
pub(crate) fn register(registry: &mut Registry, system: &System) {
    for kind in ["native", "syscall"] {
        let system = system.clone();
        registry.add_with(kind, move |spec: NativeSpec, cx: &CompileCx<'_>| {
            let opcode = Opcode::parse(&spec.opcode).map_err(|e| vec![cx.error("opcode", e)])?;
            Ok(Box::new(NativeNode {
                opcode,
                system: system.clone(),
                // Specs are checked against the kinds the graph has, charts included.
                registry: cx.registry.clone(),
            }) as Box<dyn Node>)
        });
    }
}

/// The compiled `native`.
pub struct NativeNode {
    opcode: Opcode,
    system: System,
    registry: Registry,
}

impl Node for NativeNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        shape::in_port(name)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        shape::out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let input = match packet {
            error @ Packet::Data(Value::Error(_)) => return cx.write(shape::ERROR, error),
            Packet::Data(v) => v,
            Packet::None => Value::Null,
        };
        Flow::pending(async move {
            let answer = match self.opcode.kind {
                ResourceKind::Specs => self.run::<Spec>(input).await,
                ResourceKind::Secrets => self.run::<Secret>(input).await,
                ResourceKind::Charts => self.run::<Chart>(input).await,
            };
            match answer {
                Ok(value) => cx.send(shape::OUT, value).await,
                Err(e) => cx.write(shape::ERROR, Packet::Data(Value::Error(e))).await,
            }
        })
    }
}

/// A resource read from a packet, in the runtime's namespace when it names none.
trait Read: Resource {
    fn read(value: &Value, label: &str, namespace: &str) -> Result<Self, Vec<Diagnostic>>;
}

impl Read for Spec {
    fn read(value: &Value, label: &str, namespace: &str) -> Result<Spec, Vec<Diagnostic>> {
        Spec::from_value_in(value, label, namespace)
    }
}

impl Read for Secret {
    fn read(value: &Value, label: &str, namespace: &str) -> Result<Secret, Vec<Diagnostic>> {
        Secret::from_value_in(value, label, namespace)
    }
}

impl Read for Chart {
    fn read(value: &Value, label: &str, namespace: &str) -> Result<Chart, Vec<Diagnostic>> {
        Chart::from_value_in(value, label, namespace)
    }
}

impl NativeNode {
    async fn run<R: Read>(&self, input: Value) -> Result<Value, ErrorValue> {
        let items = items(input);
        let answer: Vec<R> = match self.opcode.op {
            Op::Create => self.create(&items).await?,
            Op::Read => self.read(&items).await?,
            Op::Update => self.update(&items).await?,
            Op::Delete => self.delete(&items).await?,
        };
        Ok(Value::List(
            answer.iter().map(Resource::to_value).collect::<List>(),
        ))
    }

    /// The resources of `items`, every problem at once.
    fn resources<R: Read>(&self, items: &[Value]) -> Result<Vec<R>, ErrorValue> {
        let mut problems = Vec::new();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let label = label(item, i);
            match R::read(item, &label, &self.system.namespace)
                .and_then(|r| r.validate(&label).map(|()| r))
            {
                Ok(r) => out.push(r),
                Err(ds) => problems.extend(ds),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(invalid(Diagnostics(problems)))
        }
    }

    async fn create<R: Read>(&self, items: &[Value]) -> Result<Vec<R>, ErrorValue> {
        let new: Vec<R> = self.resources(items)?;
        let store = &self.system.store;
        // Create is not an upsert: a resource already stored under its id or name is refused.
        let examples: Vec<Example> = new
            .iter()
            .flat_map(|r| {
                let by_id = r.id().map(Example::by_id);
                let by_name = r.name().map(|n| Example::by_name(r.namespace(), n));
                by_id.into_iter().chain(by_name)
            })
            .collect();
        if !examples.is_empty()
            && let Some(taken) = store.load::<R>(&examples).await.map_err(failed)?.first()
        {
            return Err(duplicated(format!(
                "duplicated key: a {} named `{}` already exists in namespace `{}`",
                R::KIND.singular(),
                taken.name().or(taken.id()).unwrap_or_default(),
                taken.namespace()
            )));
        }
        self.check(&new).await?;
        store.apply(new).await.map_err(failed)
    }

    async fn read<R: Read>(&self, items: &[Value]) -> Result<Vec<R>, ErrorValue> {
        let examples: Vec<Example> = if items.is_empty() {
            vec![Example::in_namespace(&self.system.namespace)]
        } else {
            items
                .iter()
                .map(|v| self.example(v))
                .collect::<Result<_, _>>()?
        };
        self.system.store.load(&examples).await.map_err(failed)
    }

    async fn update<R: Read>(&self, items: &[Value]) -> Result<Vec<R>, ErrorValue> {
        let store = &self.system.store;
        let mut patched = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let example = self.example(item)?;
            if example.id.is_none() && example.name.is_none() {
                continue;
            }
            let Some(stored) = store.load::<R>(&[example]).await.map_err(failed)?.pop() else {
                continue;
            };
            let mut merged = patch::merge(&stored.to_value(), item);
            // The patch may not move a resource to another id.
            if let (Value::Map(map), Some(id)) = (&mut merged, stored.id()) {
                *map = map.clone().with("id", id.to_owned());
            }
            let label = label(item, i);
            let resource = R::read(&merged, &label, &self.system.namespace)
                .and_then(|r| r.validate(&label).map(|()| r))
                .map_err(|ds| invalid(Diagnostics(ds)))?;
            patched.push(resource);
        }
        if patched.is_empty() {
            return Ok(patched);
        }
        self.check(&patched).await?;
        store.apply(patched).await.map_err(failed)
    }

    async fn delete<R: Read>(&self, items: &[Value]) -> Result<Vec<R>, ErrorValue> {
        let mut examples = Vec::with_capacity(items.len());
        for item in items {
            let example = self.example(item)?;
            // Exactly the resources given: an entry that names none deletes nothing.
            if example.id.is_some() || example.name.is_some() {
                examples.push(example);
            }
        }
        if examples.is_empty() {
            return Ok(Vec::new());
        }
        self.system.store.delete(&examples).await.map_err(failed)
    }

    /// Checks specs as `apply` does, against the namespace's secrets, charts and specs; other
    /// resources need no check beyond reading them.
    async fn check<R: Read>(&self, resources: &[R]) -> Result<(), ErrorValue> {
        if R::KIND != ResourceKind::Specs {
            return Ok(());
        }
        let specs: Vec<Spec> = resources
            .iter()
            .map(|r| Spec::from_value(&r.to_value(), r.name().unwrap_or_default()))
            .collect::<Result<_, _>>()
            .map_err(|ds| invalid(Diagnostics(ds)))?;
        let namespaces: HashSet<&str> = specs.iter().map(|s| s.namespace.as_str()).collect();
        for namespace in namespaces {
            let around = uniflow_runtime::snapshot(&self.system.store, namespace)
                .await
                .map_err(failed)?;
            let these: Vec<Spec> = specs
                .iter()
                .filter(|s| s.namespace == namespace)
                .cloned()
                .collect();
            let checked =
                uniflow_runtime::check(&self.registry, &these, &around, &[], Links::Namespace);
            if !checked.errors.is_empty() {
                return Err(invalid(checked.errors));
            }
        }
        Ok(())
    }

    /// An example from a packet's entry: its `id`, `namespace` (the runtime's when absent)
    /// and `name`.
    fn example(&self, item: &Value) -> Result<Example, ErrorValue> {
        let field = |key: &str| -> Result<Option<String>, ErrorValue> {
            match item.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.to_string())),
                Some(other) => Err(unsupported_value(format!(
                    "`{key}` must be a string, not {}",
                    other.kind_name()
                ))),
            }
        };
        if !matches!(item, Value::Map(_) | Value::Null) {
            return Err(unsupported_value(format!(
                "expected a resource or a list of resources, not {}",
                item.kind_name()
            )));
        }
        Ok(Example {
            id: field("id")?,
            namespace: Some(field("namespace")?.unwrap_or_else(|| self.system.namespace.clone())),
            name: field("name")?,
        })
    }
}

/// The entries of an input: a list's items, one object, or nothing for `null`.
fn items(input: Value) -> Vec<Value> {
    match input {
        Value::Null => Vec::new(),
        Value::List(items) => items.iter().cloned().collect(),
        one => vec![one],
    }
}

/// How problems name an entry: its name, else its position.
fn label(item: &Value, position: usize) -> String {
    match item.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.to_string(),
        _ => format!("#{position}"),
    }
}

/// An invalid resource: the problems, one per line, joined with the message upstream's admin
/// API tells apart (`unsupported type` for an unknown kind, `unsupported value` otherwise).
///
/// The lines carry no count or indent, unlike the CLI's report: an admin API hands the message
/// to its client as it is, usually in a JSON string.
fn invalid(problems: Diagnostics) -> ErrorValue {
    let cause = if problems.0.iter().any(|d| d.path == "kind") {
        "unsupported type"
    } else {
        "unsupported value"
    };
    let lines: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
    ErrorValue::caused(lines.join("\n"), ErrorValue::new(cause))
}

/// A name or id already taken, joined with `duplicated key` (upstream's whole message), so
/// a handler's `self == "duplicated key"` holds whichever check found it.
fn duplicated(message: String) -> ErrorValue {
    ErrorValue::caused(message, ErrorValue::new("duplicated key"))
}

fn unsupported_value(message: String) -> ErrorValue {
    ErrorValue::caused(message, ErrorValue::new("unsupported value"))
}

/// A store failure, as its message says. A name the store found taken (twice in one input,
/// or by another writer since this node's own check) is `duplicated key` as well, and a
/// resource it cannot hold is `unsupported value`, as invalid ones are.
fn failed(e: uniflow_store::Error) -> ErrorValue {
    use uniflow_store::Error;
    let message = e.to_string();
    match e {
        Error::DuplicateName { .. }
        | Error::DuplicateInBatch { .. }
        | Error::DuplicateId { .. }
        | Error::Conflict { .. } => duplicated(message),
        Error::Invalid { .. } => unsupported_value(message),
        _ => ErrorValue::new(message),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uniflow_core::{Graph, Process};
    use uniflow_spec::{Format, parse};
    use uniflow_store::Store;

    use super::*;

    /// A `native` node with `opcode` over `store`, in namespace `default`.
    async fn node(store: &Store, opcode: &str) -> Arc<Graph> {
        let mut registry = Registry::new();
        uniflow_core::testing::register(&mut registry);
        crate::register(
            &mut registry,
            System {
                store: store.clone(),
                namespace: "default".to_owned(),
            },
        );
        let specs = parse(
            &format!("- {{kind: native, name: n, opcode: {opcode}}}"),
            Format::Yaml,
            None,
        )
        .unwrap();
        let graph = Graph::compile(specs, &registry, &|_, _| None).unwrap();
        graph.load().await.unwrap();
        graph
    }

    /// What the node answers `input` (JSON).
    async fn call(graph: &Arc<Graph>, input: &str) -> Packet {
        let id = graph.find("n").unwrap();
        let node = graph.node(id);
        let value: Value = serde_json::from_str(input).unwrap();
        let proc = Process::new();
        node.handle(
            Cx::new(graph, &proc, id),
            node.in_port("in").unwrap(),
            Packet::Data(value),
        )
        .await
    }

    fn error(answer: &Packet) -> &ErrorValue {
        answer
            .value()
            .and_then(Value::as_error)
            .unwrap_or_else(|| panic!("not an error: {answer:?}"))
    }

    #[tokio::test]
    async fn an_unknown_opcode_fails_the_spec_at_load() {
        let store = Store::open("mem://").await.unwrap();
        let mut registry = Registry::new();
        crate::register(
            &mut registry,
            System {
                store,
                namespace: "default".to_owned(),
            },
        );
        let specs = parse(
            "- {kind: native, name: n, opcode: specs.drop}",
            Format::Yaml,
            None,
        )
        .unwrap();
        let Err(problems) = Graph::compile(specs, &registry, &|_, _| None) else {
            panic!("`specs.drop` compiled");
        };
        let problems = problems.to_string();
        assert!(
            problems.contains("spec `n` field `opcode`: unknown opcode `specs.drop`"),
            "{problems}"
        );
    }

    #[tokio::test]
    async fn a_name_taken_is_duplicated_key() {
        let store = Store::open("mem://").await.unwrap();
        let create = node(&store, "specs.create").await;
        let spec = r#"{"kind": "test-echo", "name": "a"}"#;
        assert!(
            call(&create, spec)
                .await
                .value()
                .unwrap()
                .as_list()
                .is_some()
        );
        let again = call(&create, spec).await;
        assert!(error(&again).is("duplicated key"), "{again:?}");
        assert!(error(&again).message().contains("named `a`"));
        let stored: Vec<Spec> = store
            .load(&[Example::in_namespace("default")])
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);
        // Secrets are not checked beyond reading them, so the store finds a name given twice.
        let secrets = node(&store, "secrets.create").await;
        let twice = call(
            &secrets,
            r#"[{"name": "s", "data": 1}, {"name": "s", "data": 2}]"#,
        )
        .await;
        assert!(error(&twice).is("duplicated key"), "{twice:?}");
        let stored: Vec<Secret> = store
            .load(&[Example::in_namespace("default")])
            .await
            .unwrap();
        assert!(stored.is_empty(), "nothing of a refused input is stored");
    }

    #[tokio::test]
    async fn an_invalid_resource_names_spec_and_field_one_problem_a_line() {
        let store = Store::open("mem://").await.unwrap();
        let create = node(&store, "specs.create").await;
        let answer = call(
            &create,
            r#"[{"kind": "wat", "name": "x"}, {"kind": "huh", "name": "y"}]"#,
        )
        .await;
        let e = error(&answer);
        assert!(e.is("unsupported type"), "{answer:?}");
        let lines: Vec<&str> = e.message().lines().collect();
        assert_eq!(lines.len(), 2, "{e}");
        assert!(lines[0].starts_with("spec `x` field `kind`: "), "{e}");
        assert!(lines[1].starts_with("spec `y` field `kind`: "), "{e}");
        let answer = call(&create, r#"{"kind": "test-const", "name": "z"}"#).await;
        let e = error(&answer);
        assert!(
            e.is("unsupported value") && !e.is("unsupported type"),
            "{e}"
        );
        assert!(e.message().starts_with("spec `z` field `value`"), "{e}");
    }
}
