//! The compiled graph: every spec compiled into a node and every link resolved to a target.
//!
//! Compiling happens once per load. It reports every problem at once: bad env, unknown kinds,
//! bad fields, duplicate names, and links to nodes or ports that do not exist. The result is
//! immutable; a request reads it through an `Arc` and never takes a lock or looks up a name.
//! A reload builds the next generation beside it (see [`Generation`](crate::Generation)).

use std::collections::HashMap;

use std::sync::Arc;

use uniflow_spec::{Diagnostic, Diagnostics, PortRef, SecretLookup, Spec, bind, check};
use uniflow_value::ErrorValue;

use crate::agent::{Agent, Side, Tap};
use crate::node::{Cx, Flow, InPort, LoadCx, Needs, Node, NodeId, OutPort};
use crate::packet::Packet;
use crate::process::Process;
use crate::registry::Registry;
use crate::{Error, port};

/// A link's far end: an input port of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The node.
    pub node: NodeId,
    /// Its input port.
    pub port: InPort,
}

/// A spec with its compiled node.
pub struct Symbol {
    /// The spec as loaded (after env templating).
    pub spec: Spec,
    /// The node; a reload that keeps it shares it between two generations of the graph.
    pub node: Arc<dyn Node>,
}

/// The compiled, linked graph of one namespace.
pub struct Graph {
    /// The specs' symbols, then stand-ins for nodes that links name but that are not active.
    symbols: Vec<Symbol>,
    /// How many of `symbols` are the specs'.
    active: usize,
    /// Per node, per output port number: the targets in link order.
    links: Vec<Box<[Box<[Target]>]>>,
    /// Per node: the targets of its `init` port, written once after the graph loads.
    init: Vec<Box<[Target]>>,
}

impl Graph {
    /// Compiles and links `specs`.
    ///
    /// # Errors
    /// Every problem found, each naming the spec and the field.
    pub fn compile(
        specs: Vec<Spec>,
        registry: &Registry,
        secrets: &SecretLookup<'_>,
    ) -> Result<Arc<Graph>, Diagnostics> {
        let mut problems = Diagnostics(check(&specs));
        let labels: Vec<String> = specs.iter().enumerate().map(|(i, s)| s.label(i)).collect();
        let mut symbols = Vec::with_capacity(specs.len());
        for (spec, label) in specs.into_iter().zip(&labels) {
            let bound = match bind(&spec, label, secrets) {
                Ok(b) => b,
                Err(ds) => {
                    problems.extend(ds);
                    continue;
                }
            };
            match registry.compile(&bound, label) {
                Ok(node) => symbols.push((
                    label.clone(),
                    Symbol {
                        spec: bound,
                        node: Arc::from(node),
                    },
                )),
                Err(ds) => problems.extend(ds),
            }
        }
        // Links are resolved only when every spec compiled: a port check against a node that
        // failed would add noise to the real problem.
        if !problems.is_empty() {
            return Err(problems);
        }
        let linked = link(symbols, Dangling::Reported, None);
        problems.extend(linked.problems);
        problems.into_result(())?;
        Ok(Arc::new(linked.graph))
    }

    /// A graph of nodes compiled and linked by the caller (a [`Subgraph`](crate::Subgraph)):
    /// `links[node][port]` are the targets of each output port, in link order.
    pub(crate) fn from_parts(symbols: Vec<Symbol>, links: Vec<Vec<Vec<Target>>>) -> Graph {
        let init = (0..symbols.len()).map(|_| Box::default()).collect();
        Graph {
            active: symbols.len(),
            symbols,
            links: links
                .into_iter()
                .map(|ports| ports.into_iter().map(Vec::into_boxed_slice).collect())
                .collect(),
            init,
        }
    }

    /// The node with this id.
    ///
    /// # Panics
    /// If the id is not of this graph (ids come from the graph itself).
    #[inline]
    pub fn node(&self, id: NodeId) -> &dyn Node {
        &*self.symbols[id.0 as usize].node
    }

    /// The targets of a node's output port, in link order.
    #[inline]
    pub fn targets(&self, node: NodeId, port: OutPort) -> &[Target] {
        match self.links[node.0 as usize].get(port.0 as usize) {
            Some(targets) => targets,
            None => &[],
        }
    }

    /// The targets of a node's `init` port.
    pub(crate) fn init_targets(&self, node: NodeId) -> &[Target] {
        &self.init[node.0 as usize]
    }

    /// Whether `other` links the same nodes the same way.
    pub(crate) fn same_links(&self, other: &Graph) -> bool {
        self.symbols.len() == other.symbols.len()
            && self.links == other.links
            && self.init == other.init
    }

    /// How many output port numbers of `node` have a link table slot.
    pub fn port_slots(&self, node: NodeId) -> usize {
        self.links[node.0 as usize].len()
    }

    /// Every spec's symbol, by id.
    pub fn symbols(&self) -> &[Symbol] {
        &self.symbols[..self.active]
    }

    /// A graph with no node: what a namespace runs before its first generation.
    pub fn empty() -> Arc<Graph> {
        Arc::new(Graph::from_parts(Vec::new(), Vec::new()))
    }

    /// What the nodes of this graph ask of a source, together (see [`Node::needs`]).
    pub fn needs(&self) -> Needs {
        self.symbols()
            .iter()
            .fold(Needs::NONE, |needs, s| needs.union(s.node.needs()))
    }

    /// The id of the node with this name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.symbols()
            .iter()
            .position(|s| s.spec.name.as_deref() == Some(name))
            .map(|i| NodeId(i as u32))
    }

    /// Starts every node (sources begin serving), then writes each node's spec (as a map) to
    /// its `init` port once, in spec order.
    ///
    /// # Errors
    /// When a node fails to start; that node and the ones started before it are unloaded
    /// again, last first. When an `init` port answers an error; every node is unloaded again.
    pub async fn load(self: &Arc<Self>) -> Result<(), Error> {
        for (i, sym) in self.symbols().iter().enumerate() {
            if let Err(e) = sym
                .node
                .load(LoadCx::top(Arc::clone(self), NodeId(i as u32)))
            {
                // The failed node is unloaded too: a node that starts several things (a block
                // loads its children) may have started some before it failed.
                stop(&self.symbols[..=i]).await;
                return Err(Error::Load {
                    spec: sym.spec.label(i),
                    cause: Box::new(e),
                });
            }
        }
        for (i, targets) in self.init.iter().enumerate() {
            if targets.is_empty() {
                continue;
            }
            // As upstream, an init flow that fails fails the load: the workflow is not
            // started half set up.
            if let Some(e) = init(self, NodeId(i as u32), targets).await {
                self.unload().await;
                return Err(Error::Load {
                    spec: self.symbols[i].spec.label(i),
                    cause: Box::new(Error::Init(e.message().to_string())),
                });
            }
        }
        Ok(())
    }

    /// Stops every node, last loaded first.
    pub async fn unload(&self) {
        stop(self.symbols()).await;
    }
}

/// Writes node `node`'s spec (as a map: as upstream, so that an init flow can read its name,
/// annotations or fields) to its `init` links `targets`, in a process of its own, and ends
/// that process, waiting for what its exit leaves (a transaction's commit: the table an init
/// flow creates is there before the graph serves). The error, if the flow or the exit failed.
pub(crate) async fn init(
    graph: &Arc<Graph>,
    node: NodeId,
    targets: &[Target],
) -> Option<ErrorValue> {
    let proc = Process::new();
    let cx = Cx::new(graph, &proc, node);
    let spec = graph.symbols()[node.0 as usize].spec.to_value();
    let answer = cx.write_to(targets, Packet::Data(spec)).await;
    let error = answer.value().and_then(|v| v.as_error()).cloned();
    let settled = proc.exit(error.clone()).wait().await;
    error.or(settled.err())
}

/// Unloads `symbols`, last first: what a node needs is loaded before it.
async fn stop(symbols: &[Symbol]) {
    for sym in symbols.iter().rev() {
        sym.node.unload().await;
    }
}

/// What linking does with a link to a node that is not there.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dangling {
    /// Skip it: [`check`] reported it already, and the graph will not be built.
    Reported,
    /// Link it to a stand-in that answers an error naming the node (a live namespace, whose
    /// links may name a node that was deleted, failed, or is yet to be applied).
    Inactive,
}

/// A linked graph, with the problems linking found.
pub(crate) struct Linked {
    pub(crate) graph: Graph,
    pub(crate) problems: Vec<Diagnostic>,
}

/// Resolves every spec's `ports` to targets, by id or name. Each symbol comes with its label.
/// With an agent, every link gets its taps (see [`crate::agent`]).
pub(crate) fn link(
    symbols: Vec<(String, Symbol)>,
    dangling: Dangling,
    agent: Option<&Arc<Agent>>,
) -> Linked {
    let mut problems = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::with_capacity(symbols.len());
    for (i, (_, sym)) in symbols.iter().enumerate() {
        if let Some(id) = &sym.spec.id {
            index.insert(("id", id), i);
        }
        if let Some(name) = &sym.spec.name {
            index.insert(("name", name), i);
        }
    }
    let resolve = |r: &PortRef| match (&r.id, &r.name) {
        (Some(id), _) => index.get(&("id", id.as_str())).copied(),
        (None, Some(name)) => index.get(&("name", name.as_str())).copied(),
        (None, None) => None,
    };
    // Stand-ins for what links name but the graph lacks, one per message, after the symbols.
    let mut stand_ins: Vec<String> = Vec::new();
    let mut stand_in = |message: String| {
        let at = match stand_ins.iter().position(|m| *m == message) {
            Some(at) => at,
            None => {
                stand_ins.push(message);
                stand_ins.len() - 1
            }
        };
        Target {
            node: NodeId((symbols.len() + at) as u32),
            port: InPort(0),
        }
    };
    let mut links = Vec::with_capacity(symbols.len());
    let mut init = Vec::with_capacity(symbols.len());
    let mut names = Vec::with_capacity(if agent.is_some() { symbols.len() } else { 0 });
    for (label, sym) in &symbols {
        let mut table: Vec<Vec<Target>> = Vec::new();
        let mut init_targets = Vec::new();
        let mut ports = PortNames::default();
        for (name, refs) in &sym.spec.ports {
            let slot = if name == port::INIT {
                None
            } else if let Some(out) = sym.node.out_port(name) {
                Some(out.0 as usize)
            } else {
                problems.push(Diagnostic::new(
                    label,
                    format!("ports.{name}"),
                    format!("kind `{}` has no output port `{name}`", sym.spec.kind),
                ));
                continue;
            };
            for (j, r) in refs.iter().enumerate() {
                let target = match resolve(r) {
                    Some(t) => {
                        let (target_label, target) = &symbols[t];
                        match target.node.in_port(&r.port) {
                            Some(in_port) => Target {
                                node: NodeId(t as u32),
                                port: in_port,
                            },
                            None => {
                                let message = format!(
                                    "node `{target_label}` (kind `{}`) has no input port `{}`",
                                    target.spec.kind, r.port
                                );
                                problems.push(Diagnostic::new(
                                    label,
                                    format!("ports.{name}[{j}].port"),
                                    message.clone(),
                                ));
                                if dangling == Dangling::Reported {
                                    continue;
                                }
                                stand_in(message)
                            }
                        }
                    }
                    None if dangling == Dangling::Reported => continue,
                    None => {
                        let node = r.name.as_deref().or(r.id.as_deref()).unwrap_or_default();
                        stand_in(format!("node `{node}` is not active"))
                    }
                };
                match slot {
                    None => {
                        init_targets.push(target);
                        ports.init.push(r.port.clone());
                    }
                    Some(slot) => {
                        if table.len() <= slot {
                            table.resize_with(slot + 1, Vec::new);
                            ports.slots.resize_with(slot + 1, Default::default);
                        }
                        table[slot].push(target);
                        let names = &mut ports.slots[slot];
                        if names.0.is_empty() {
                            names.0.clone_from(name);
                        }
                        names.1.push(r.port.clone());
                    }
                }
            }
        }
        links.push(table.into_iter().map(Vec::into_boxed_slice).collect());
        init.push(init_targets.into_boxed_slice());
        if agent.is_some() {
            names.push(ports);
        }
    }
    let active = symbols.len();
    let labels: Vec<String> = symbols.iter().map(|(label, _)| label.clone()).collect();
    let mut symbols: Vec<Symbol> = symbols.into_iter().map(|(_, s)| s).collect();
    for message in stand_ins {
        symbols.push(Symbol {
            spec: Spec {
                kind: INACTIVE_KIND.to_owned(),
                ..Spec::default()
            },
            node: Arc::new(Inactive(message)),
        });
        links.push(Box::default());
        init.push(Box::default());
    }
    if let Some(agent) = agent {
        let mut taps = Taps {
            agent,
            labels: &labels,
            symbols: &mut symbols,
            links: &mut links,
            init: &mut init,
        };
        for (i, ports) in names.into_iter().enumerate() {
            for (slot, (port, into)) in ports.slots.into_iter().enumerate() {
                let targets = taps.links[i][slot].to_vec();
                if !targets.is_empty() {
                    taps.links[i][slot] = taps.tap(&labels[i], &port, &targets, &into);
                }
            }
            let targets = taps.init[i].to_vec();
            if !targets.is_empty() {
                taps.init[i] = taps.tap(&labels[i], port::INIT, &targets, &ports.init);
            }
        }
    }
    Linked {
        graph: Graph {
            symbols,
            active,
            links,
            init,
        },
        problems,
    }
}

/// The names of one node's linked ports, for its taps: per output port number, its name and
/// the input port name of each target; the input port name of each `init` target.
#[derive(Default)]
struct PortNames {
    slots: Vec<(String, Vec<String>)>,
    init: Vec<String>,
}

/// Adds taps to a graph being linked.
struct Taps<'g> {
    agent: &'g Arc<Agent>,
    labels: &'g [String],
    symbols: &'g mut Vec<Symbol>,
    links: &'g mut Vec<Box<[Box<[Target]>]>>,
    init: &'g mut Vec<Box<[Target]>>,
}

impl Taps<'_> {
    /// Taps output port `port` of node `label`, linked to `targets` (at input ports `into`):
    /// the port's new targets.
    fn tap(
        &mut self,
        label: &str,
        port: &str,
        targets: &[Target],
        into: &[String],
    ) -> Box<[Target]> {
        let ins: Vec<Target> = targets
            .iter()
            .zip(into)
            .map(|(target, name)| {
                let symbol = self
                    .labels
                    .get(target.node.0 as usize)
                    .map_or(INACTIVE_KIND, String::as_str);
                let node = Arc::clone(&self.symbols[target.node.0 as usize].node);
                let tap = Tap::new(
                    self.agent,
                    symbol,
                    name,
                    Side::In,
                    vec![(node, target.port)],
                );
                self.add(tap, vec![*target])
            })
            .collect();
        let next = ins
            .iter()
            .map(|tap| {
                (
                    Arc::clone(&self.symbols[tap.node.0 as usize].node),
                    tap.port,
                )
            })
            .collect();
        let out = Tap::new(self.agent, label, port, Side::Out, next);
        Box::new([self.add(out, ins)])
    }

    fn add(&mut self, tap: Tap, targets: Vec<Target>) -> Target {
        let node = NodeId(self.symbols.len() as u32);
        self.symbols.push(Symbol {
            spec: Spec {
                kind: TAP_KIND.to_owned(),
                ..Spec::default()
            },
            node: Arc::new(tap),
        });
        self.links.push(Box::new([targets.into_boxed_slice()]));
        self.init.push(Box::default());
        Target {
            node,
            port: InPort(0),
        }
    }
}

/// The kind in the spec of a tap (see [`crate::agent`]).
const TAP_KIND: &str = "tap";

/// The kind in the spec of a stand-in for a node that links name but the graph lacks.
const INACTIVE_KIND: &str = "inactive";

/// Stands in for a node that a link names but that is not active: answers every packet with an
/// error saying so, so an unhandled request fails with the node's name in the log, until the
/// node comes back with a later generation.
struct Inactive(String);

impl Node for Inactive {
    fn in_port(&self, _name: &str) -> Option<InPort> {
        Some(InPort(0))
    }

    fn out_port(&self, _name: &str) -> Option<OutPort> {
        None
    }

    fn handle<'a>(&'a self, _cx: Cx<'a>, _port: InPort, _packet: Packet) -> Flow<'a> {
        Flow::Ready(Packet::error(self.0.as_str()))
    }
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("nodes", &self.symbols.len())
            .finish_non_exhaustive()
    }
}
