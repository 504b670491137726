//! `apply`, `get` and `delete`: what the store holds, changed and shown from the command line.
//!
//! Each verb opens the store `database.url` names and works on one namespace. Running
//! instances watching that store reload on their own. `mem://` lives inside one process, so
//! these verbs refuse it instead of changing a store nobody else sees.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context as _, bail};
use uniflow_runtime::Links;
use uniflow_spec::{Chart, Diagnostics, Resource, ResourceKind, Secret, Spec};
use uniflow_store::{Example, Store};
use uniflow_value::Value;

use crate::{Config, open_store, placed, registry_with_system};

/// How a verb prints resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// Upstream's table (secret data masked).
    #[default]
    Table,
    /// A JSON list.
    Json,
    /// A YAML list: what `apply -f` reads back.
    Yaml,
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Output, String> {
        match s {
            "table" => Ok(Output::Table),
            "json" => Ok(Output::Json),
            "yaml" => Ok(Output::Yaml),
            other => Err(format!(
                "unknown output `{other}`: expected table, json or yaml"
            )),
        }
    }
}

/// Reads a resource argument: `specs` (or `nodes`), `secrets`, `charts`.
///
/// # Errors
/// Anything else.
pub fn parse_kind(text: &str) -> Result<ResourceKind, String> {
    match text {
        "nodes" | "node" | "spec" => Ok(ResourceKind::Specs),
        "secret" => Ok(ResourceKind::Secrets),
        "chart" => Ok(ResourceKind::Charts),
        other => ResourceKind::parse(other).ok_or_else(|| {
            format!("unknown resource `{other}`: expected specs (or nodes), secrets or charts")
        }),
    }
}

/// What `delete` deletes.
#[derive(Debug, Clone)]
pub enum Selection {
    /// The resources with these names.
    Names(Vec<String>),
    /// The resources a file lists (by id, else by name).
    File(std::path::PathBuf),
    /// Every resource of the kind in the namespace.
    All,
}

/// What a verb printed: the text for standard output, and the warnings for standard error.
#[derive(Debug, Default)]
pub struct Printed {
    /// For standard output.
    pub out: String,
    /// One line each, for standard error.
    pub warnings: Vec<String>,
}

/// Opens the store for a verb, refusing `mem://`.
async fn shared_store(config: &Config, verb: &str) -> anyhow::Result<Store> {
    let store = open_store(config).await?;
    if !store.is_shared() {
        bail!(
            "database.url is `{}`: the in-memory store lives inside one process, so `uniflow {verb}` \
             cannot reach the store of a running `uniflow start`. Point both at a shared store: \
             `sqlite://PATH` (a file) or `postgres://...`, in .uniflow.toml ([database] url) or \
             UNIFLOW_DATABASE_URL; or give the files to `uniflow start --from-specs/--from-secrets/--from-charts`; \
             or run the admin API in that process (examples/system.yaml, docs/admin-api.md)",
            store.url_redacted()
        );
    }
    Ok(store)
}

/// `apply <kind> -f FILE`: checks the file whole, then upserts it (by id, else by name) in
/// one transaction, and prints what it stored (or, with `dry_run`, what it would store).
///
/// # Errors
/// A file that does not read; every problem the check finds (nothing is stored then); a
/// store that refuses the batch.
pub async fn apply(
    config: &Config,
    kind: ResourceKind,
    file: &Path,
    namespace: &str,
    dry_run: bool,
    output: Output,
) -> anyhow::Result<Printed> {
    let store = shared_store(config, "apply").await?;
    let name = file.display().to_string();
    let read = |d: Diagnostics| anyhow::anyhow!("{d}");
    let mut printed = Printed::default();
    let around = uniflow_runtime::snapshot(&store, namespace)
        .await
        .context("reading the namespace from the store")?;
    let registry = registry_with_system(&store, namespace);
    printed.out = match kind {
        ResourceKind::Specs => {
            let specs = uniflow_spec::load_file(file, namespace).map_err(read)?;
            let checked = uniflow_runtime::check(&registry, &specs, &around, &[], Links::Namespace);
            printed.warn(&checked.warnings, &name);
            if !checked.errors.is_empty() {
                return Err(placed(checked.errors, Some(&name)));
            }
            store_and_show(&store, specs, dry_run, output).await?
        }
        ResourceKind::Secrets => {
            let secrets = uniflow_spec::load_secrets_file(file, namespace).map_err(read)?;
            store_and_show(&store, secrets, dry_run, output).await?
        }
        ResourceKind::Charts => {
            let charts = uniflow_spec::load_charts_file(file, namespace).map_err(read)?;
            let checked = uniflow_runtime::check_charts(&registry, &charts, &around.charts);
            printed.warn(&checked.warnings, &name);
            if !checked.errors.is_empty() {
                return Err(placed(checked.errors, Some(&name)));
            }
            store_and_show(&store, charts, dry_run, output).await?
        }
    };
    Ok(printed)
}

async fn store_and_show<R: Resource>(
    store: &Store,
    items: Vec<R>,
    dry_run: bool,
    output: Output,
) -> anyhow::Result<String> {
    let shown = if dry_run {
        items
    } else {
        store
            .apply(items)
            .await
            .with_context(|| format!("applying {}", R::KIND))?
    };
    show(&shown, output)
}

/// `get <kind> [NAME...]`: the namespace's resources of the kind, or the named ones.
///
/// # Errors
/// A store that fails; a name that is not there (what was found is printed first).
pub async fn get(
    config: &Config,
    kind: ResourceKind,
    names: &[String],
    namespace: &str,
    output: Output,
) -> anyhow::Result<Printed> {
    let store = shared_store(config, "get").await?;
    let examples = examples(names, namespace);
    match kind {
        ResourceKind::Specs => found::<Spec>(&store, &examples, names, output).await,
        ResourceKind::Secrets => found::<Secret>(&store, &examples, names, output).await,
        ResourceKind::Charts => found::<Chart>(&store, &examples, names, output).await,
    }
}

fn examples(names: &[String], namespace: &str) -> Vec<Example> {
    if names.is_empty() {
        return vec![Example::in_namespace(namespace)];
    }
    names
        .iter()
        .map(|n| Example::by_name(namespace, n.clone()))
        .collect()
}

async fn found<R: Resource>(
    store: &Store,
    examples: &[Example],
    names: &[String],
    output: Output,
) -> anyhow::Result<Printed> {
    let items: Vec<R> = store.load(examples).await?;
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !items.iter().any(|r| r.name() == Some(n.as_str())))
        .map(String::as_str)
        .collect();
    let out = show(&items, output)?;
    if !missing.is_empty() {
        bail!(
            "{out}\nnot found: {} {}",
            R::KIND.singular(),
            missing.join(", ")
        );
    }
    Ok(Printed {
        out,
        warnings: Vec::new(),
    })
}

/// `delete <kind> (NAME... | -f FILE | --all)`: deletes the selection and prints what it
/// deleted; warns about links left pointing at deleted specs.
///
/// # Errors
/// A store that fails; a file that does not read, or lists a resource with neither id nor
/// name (upstream deleted the whole namespace for it).
pub async fn delete(
    config: &Config,
    kind: ResourceKind,
    selection: &Selection,
    namespace: &str,
    output: Output,
) -> anyhow::Result<Printed> {
    let store = shared_store(config, "delete").await?;
    let examples = match selection {
        Selection::Names(names) => examples(names, namespace),
        Selection::All => vec![Example::in_namespace(namespace)],
        Selection::File(path) => file_examples(kind, path, namespace)?,
    };
    match kind {
        ResourceKind::Specs => {
            let deleted: Vec<Spec> = store.delete(&examples).await?;
            let mut printed = Printed {
                out: show(&deleted, output)?,
                warnings: Vec::new(),
            };
            dangling(&store, &deleted, namespace, &mut printed).await?;
            Ok(printed)
        }
        ResourceKind::Secrets => removed::<Secret>(&store, &examples, output).await,
        ResourceKind::Charts => removed::<Chart>(&store, &examples, output).await,
    }
}

async fn removed<R: Resource>(
    store: &Store,
    examples: &[Example],
    output: Output,
) -> anyhow::Result<Printed> {
    let deleted: Vec<R> = store.delete(examples).await?;
    Ok(Printed {
        out: show(&deleted, output)?,
        warnings: Vec::new(),
    })
}

/// The examples of the resources a file lists.
fn file_examples(kind: ResourceKind, path: &Path, namespace: &str) -> anyhow::Result<Vec<Example>> {
    let read = |d: Diagnostics| anyhow::anyhow!("{d}");
    let examples: Vec<Example> = match kind {
        ResourceKind::Secrets => uniflow_spec::load_secrets_file(path, namespace)
            .map_err(read)?
            .iter()
            .map(Example::of)
            .collect(),
        ResourceKind::Charts => uniflow_spec::load_charts_file(path, namespace)
            .map_err(read)?
            .iter()
            .map(Example::of)
            .collect(),
        _ => uniflow_spec::load_file(path, namespace)
            .map_err(read)?
            .iter()
            .map(Example::of)
            .collect(),
    };
    if examples.is_empty() {
        bail!(
            "{} lists nothing to delete (to delete every {} of namespace `{namespace}`, use --all)",
            path.display(),
            kind.singular()
        );
    }
    if let Some(i) = examples
        .iter()
        .position(|e| e.id.is_none() && e.name.is_none())
    {
        bail!(
            "{}: entry #{i} has neither id nor name, so it names no {}",
            path.display(),
            kind.singular()
        );
    }
    Ok(examples)
}

/// Warns about each link of the namespace's remaining specs to a deleted one.
async fn dangling(
    store: &Store,
    deleted: &[Spec],
    namespace: &str,
    printed: &mut Printed,
) -> anyhow::Result<()> {
    if deleted.is_empty() {
        return Ok(());
    }
    let gone: HashSet<&str> = deleted
        .iter()
        .flat_map(|s| s.id.iter().chain(s.name.iter()).map(String::as_str))
        .collect();
    let left: Vec<Spec> = store.load(&[Example::in_namespace(namespace)]).await?;
    for (i, spec) in left.iter().enumerate() {
        for (port, refs) in &spec.ports {
            for r in refs {
                if let Some(target) = r.id.as_deref().or(r.name.as_deref())
                    && gone.contains(target)
                {
                    printed.warnings.push(format!(
                        "spec `{}` port `{port}` still links to deleted `{target}`: that link answers an error until a node `{target}` is applied",
                        spec.label(i)
                    ));
                }
            }
        }
    }
    Ok(())
}

impl Printed {
    fn warn(&mut self, warnings: &[uniflow_spec::Diagnostic], file: &str) {
        self.warnings.extend(
            warnings
                .iter()
                .map(|w| format!("warning: {}", w.clone().in_file(Some(file)))),
        );
    }
}

/// The resources as `output` prints them.
fn show<R: Resource>(items: &[R], output: Output) -> anyhow::Result<String> {
    let values: Vec<Value> = items.iter().map(Resource::to_value).collect();
    Ok(match output {
        Output::Table => {
            let masked: Vec<Value> = if R::KIND == ResourceKind::Secrets {
                values.iter().map(mask).collect()
            } else {
                values
            };
            crate::table::render(&masked)
        }
        Output::Json => {
            let mut text = serde_json::to_string_pretty(&Value::List(values.into()))?;
            text.push('\n');
            text
        }
        Output::Yaml => yaml_serde::to_string(&Value::List(values.into()))?,
    })
}

/// A secret's row with its data hidden.
fn mask(secret: &Value) -> Value {
    match secret {
        Value::Map(map) => Value::Map(
            map.iter()
                .map(|(k, v)| {
                    if k.as_str() == Some("data") {
                        (k.clone(), Value::from("******"))
                    } else {
                        (k.clone(), v.clone())
                    }
                })
                .collect(),
        ),
        other => other.clone(),
    }
}
