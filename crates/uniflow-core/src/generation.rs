//! Generations: the graph of a live namespace, rebuilt beside the running one on a change.
//!
//! [`Generation::build`] compiles a namespace's specs as the successor of the graph that runs.
//! A spec whose bound form (after env and secrets) did not change keeps its node, shared by
//! both graphs, with whatever state it holds (sessions, pools, a listener's socket and its
//! connections). Only new and changed specs are compiled. A spec that fails to bind or compile
//! keeps its running node, if it has one, and its problem is reported; a link to a node that
//! is not active (deleted, failed, not applied yet) reaches a stand-in that answers an error
//! naming that node, and heals when a later generation has the node.
//!
//! [`Generation::start`] loads the new nodes (a new node first adopts what its predecessor can
//! hand over), writes their `init` ports, then moves the kept nodes to the new graph (a
//! listener's next request runs there). What the new graph no longer has is handed back as
//! [`Retired`], to unload once the new graph serves: requests that started on the old graph
//! finish there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use uniflow_spec::{Diagnostics, SecretLookup, Spec, bind, check_unique};

use crate::Error;
use crate::agent::Agent;
use crate::graph::{Dangling, Graph, Symbol, link};
use crate::node::{LoadCx, Node, NodeId};
use crate::registry::Registry;

/// What a generation is built with, besides its specs.
pub struct Build<'a> {
    /// The node kinds.
    pub registry: &'a Registry,
    /// The secrets that env entries name.
    pub secrets: &'a SecretLookup<'a>,
    /// Whether a spec must be compiled again even though its bound form did not change:
    /// something it is built from besides its spec changed (a chart it instantiates).
    pub stale: &'a dyn Fn(&Spec) -> bool,
    /// The keys (see [`key`]) of specs that must keep their running node, or stay out when
    /// they have none: their new version failed to start.
    pub held: &'a HashSet<String>,
    /// What wraps each node compiled for the generation (counting its packets, say), if
    /// anything.
    pub wrap: Option<&'a Wrap>,
    /// What records the frames of the generation's packets and holds them at breakpoints, if
    /// anything: its links then get taps (see [`crate::agent`]).
    pub agent: Option<&'a Arc<Agent>>,
}

/// Wraps a node compiled from a spec.
pub type Wrap = dyn Fn(&Spec, Box<dyn Node>) -> Box<dyn Node> + Send + Sync;

/// Where a node of a generation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The previous generation's node, carried over.
    Kept(NodeId),
    /// Compiled for this generation, replacing the previous generation's node, if any.
    New(Option<NodeId>),
}

/// The next graph of a namespace, built but not started: see the module's documentation.
pub struct Generation {
    graph: Arc<Graph>,
    previous: Arc<Graph>,
    /// Per spec node of `graph`.
    origins: Vec<Origin>,
    problems: Diagnostics,
}

/// A spec's identity across generations: its id, else its name, else its position.
pub fn key(spec: &Spec, position: usize) -> String {
    spec.label(position)
}

impl Generation {
    /// Builds the successor of `previous` from `specs`: see the module's documentation.
    pub fn build(previous: &Arc<Graph>, specs: Vec<Spec>, with: &Build<'_>) -> Generation {
        let mut problems = Diagnostics(check_unique(&specs));
        let running: HashMap<String, NodeId> = previous
            .symbols()
            .iter()
            .enumerate()
            .map(|(i, s)| (key(&s.spec, i), NodeId(i as u32)))
            .collect();
        let mut symbols = Vec::with_capacity(specs.len());
        let mut origins = Vec::with_capacity(specs.len());
        // A spec that stays as it runs: its running node, if it has one, carried over.
        let keep =
            |label: &str, was: Option<NodeId>, symbols: &mut Vec<_>, origins: &mut Vec<_>| {
                if let Some(was) = was {
                    let old = &previous.symbols()[was.0 as usize];
                    symbols.push((
                        label.to_owned(),
                        Symbol {
                            spec: old.spec.clone(),
                            node: Arc::clone(&old.node),
                        },
                    ));
                    origins.push(Origin::Kept(was));
                }
            };
        for (i, spec) in specs.into_iter().enumerate() {
            let label = spec.label(i);
            let was = running.get(&key(&spec, i)).copied();
            if with.held.contains(&key(&spec, i)) {
                keep(&label, was, &mut symbols, &mut origins);
                continue;
            }
            let bound = match bind(&spec, &label, with.secrets) {
                Ok(bound) => bound,
                Err(ds) => {
                    problems.extend(ds);
                    keep(&label, was, &mut symbols, &mut origins);
                    continue;
                }
            };
            if let Some(was) = was
                && previous.symbols()[was.0 as usize].spec == bound
                && !(with.stale)(&bound)
            {
                keep(&label, Some(was), &mut symbols, &mut origins);
                continue;
            }
            match with.registry.compile(&bound, &label) {
                Ok(node) => {
                    let node = match with.wrap {
                        Some(wrap) => wrap(&bound, node),
                        None => node,
                    };
                    symbols.push((
                        label,
                        Symbol {
                            spec: bound,
                            node: Arc::from(node),
                        },
                    ));
                    origins.push(Origin::New(was));
                }
                Err(ds) => {
                    problems.extend(ds);
                    keep(&label, was, &mut symbols, &mut origins);
                }
            }
        }
        let linked = link(symbols, Dangling::Inactive, with.agent);
        problems.extend(linked.problems);
        Generation {
            graph: Arc::new(linked.graph),
            previous: Arc::clone(previous),
            origins,
            problems,
        }
    }

    /// The graph.
    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
    }

    /// What was wrong with the specs: each failed spec kept its running node or stays out,
    /// and each bad link answers an error.
    pub fn problems(&self) -> &Diagnostics {
        &self.problems
    }

    /// The keys of the specs compiled anew for this generation.
    pub fn compiled(&self) -> impl Iterator<Item = String> + '_ {
        self.new_nodes()
            .map(|i| key(&self.graph.symbols()[i].spec, i))
    }

    /// Whether the generation changes nothing: every node is the previous one, in the same
    /// place, with the same links.
    pub fn is_unchanged(&self) -> bool {
        self.origins.len() == self.previous.symbols().len()
            && self
                .origins
                .iter()
                .enumerate()
                .all(|(i, o)| *o == Origin::Kept(NodeId(i as u32)))
            && self.graph.same_links(&self.previous)
    }

    fn new_nodes(&self) -> impl Iterator<Item = usize> + '_ {
        self.origins
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, Origin::New(_)))
            .map(|(i, _)| i)
    }

    /// Starts the generation: loads the new nodes, writes their `init` ports, and moves the
    /// kept nodes onto the new graph. Returns the graph and what it retired.
    ///
    /// # Errors
    /// When a new node fails to load or its `init` port answers an error: the new nodes
    /// loaded so far are unloaded again and the previous generation runs on untouched. The
    /// failure names the spec by its [`key`], to build again with that spec held.
    pub async fn start(self) -> Result<(Arc<Graph>, Retired), Failed> {
        let graph = &self.graph;
        let mut loaded: Vec<usize> = Vec::new();
        for i in self.new_nodes() {
            let sym = &graph.symbols()[i];
            if let Origin::New(Some(was)) = self.origins[i] {
                sym.node.adopt(self.previous.node(was));
            }
            let result = sym
                .node
                .load(LoadCx::top(Arc::clone(graph), NodeId(i as u32)));
            // A node that fails is unloaded too: it may have started some of what it holds.
            loaded.push(i);
            if let Err(e) = result {
                return Err(self.fail(&loaded, i, e).await);
            }
        }
        for &i in &loaded {
            let targets = graph.init_targets(NodeId(i as u32));
            if targets.is_empty() {
                continue;
            }
            if let Some(e) = crate::graph::init(graph, NodeId(i as u32), targets).await {
                let cause = Error::Init(e.message().to_string());
                return Err(self.fail(&loaded, i, cause).await);
            }
        }
        let mut carried = vec![false; self.previous.symbols().len()];
        for (i, origin) in self.origins.iter().enumerate() {
            if let Origin::Kept(was) = *origin {
                carried[was.0 as usize] = true;
                graph.symbols()[i]
                    .node
                    .moved(LoadCx::top(Arc::clone(graph), NodeId(i as u32)));
            }
        }
        let retired = self
            .previous
            .symbols()
            .iter()
            .zip(carried)
            .filter(|(_, carried)| !carried)
            .map(|(s, _)| Arc::clone(&s.node))
            .collect();
        Ok((Arc::clone(graph), Retired(retired)))
    }

    async fn fail(&self, loaded: &[usize], failed: usize, cause: Error) -> Failed {
        for &i in loaded.iter().rev() {
            self.graph.symbols()[i].node.unload().await;
        }
        let spec = &self.graph.symbols()[failed].spec;
        Failed {
            key: key(spec, failed),
            error: Error::Load {
                spec: spec.label(failed),
                cause: Box::new(cause),
            },
        }
    }
}

/// A new node of a generation failed to start.
#[derive(Debug)]
pub struct Failed {
    /// The spec's [`key`].
    pub key: String,
    /// Why, naming the spec.
    pub error: Error,
}

/// The nodes a generation no longer has, still loaded: unload them once the new generation
/// serves.
#[must_use = "retired nodes are still loaded until unloaded"]
pub struct Retired(Vec<Arc<dyn Node>>);

impl Retired {
    /// Whether nothing was retired.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many nodes were retired.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Unloads them, last first (a listener finishes its in-flight requests).
    pub async fn unload(self) {
        for node in self.0.iter().rev() {
            node.unload().await;
        }
    }
}
