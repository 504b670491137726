//! Graphs inside a node: a `block`'s children, and later a chart's instance.
//!
//! A [`Subgraph`] is a graph of nodes that the caller compiled and linked itself, with a map
//! from the enclosing node's port names to ports inside. Its inputs are either every input of
//! one inner node (a block's first child) or named one by one; each of its outputs is a name
//! that inner links lead to (through a node of its own). A packet enters through [`Subgraph::handle`] and keeps its hop
//! count, so a cycle that passes through a subgraph is cut at [`MAX_DEPTH`] like any other; a
//! write to one of its outputs continues, in the graph around, from the enclosing node's
//! output port of that name, and its answer comes back to the writer inside.
//!
//! The subgraph does not know the graph around it: a packet's context carries the enclosing
//! node's context while it is inside (borrowed, for the call), and a node started at load
//! carries an owned [`LoadCx`] chain. So nothing points from inside to outside and nothing
//! has to be set once the outer graph exists.
//!
//! [`MAX_DEPTH`]: crate::MAX_DEPTH

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use uniflow_spec::Spec;
use uniflow_value::{Map, Value};

use crate::Error;
use crate::graph::{Graph, Symbol, Target};
use crate::node::{Cx, Flow, InPort, LoadCx, Needs, Node, NodeId, OutPort};
use crate::packet::Packet;

/// The kind in the spec of a subgraph's output node; its field `port` names the output.
pub const OUTPUT_KIND: &str = "subgraph-output";

/// Writes what reaches it to the enclosing node's output port: a subgraph's output.
struct Output(OutPort);

impl Node for Output {
    fn in_port(&self, name: &str) -> Option<InPort> {
        (name == crate::port::IN).then_some(InPort(0))
    }

    fn out_port(&self, _name: &str) -> Option<OutPort> {
        None
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        cx.exit(self.0, packet)
    }
}

/// Where a subgraph's inputs lead.
enum Inputs {
    /// Every input port of this node, with its own numbers.
    Of(NodeId),
    /// Each named port to its target; `InPort(i)` is the `i`th.
    Named(Vec<(String, Target)>),
}

/// A compiled graph inside a node, with its port map.
pub struct Subgraph {
    graph: Arc<Graph>,
    inputs: Inputs,
    /// The output names; `OutPort(i)` of the enclosing node is the `i`th.
    outputs: Vec<String>,
}

/// Builds a [`Subgraph`] from compiled nodes.
pub struct SubgraphBuilder {
    symbols: Vec<Symbol>,
    /// Per node, per output port number: the targets, in link order.
    links: Vec<Vec<Vec<Target>>>,
    inputs: Inputs,
    /// The output names, with the node that writes each to the enclosing node's port.
    outputs: Vec<(String, NodeId)>,
}

impl Default for SubgraphBuilder {
    fn default() -> Self {
        SubgraphBuilder {
            symbols: Vec::new(),
            links: Vec::new(),
            inputs: Inputs::Named(Vec::new()),
            outputs: Vec::new(),
        }
    }
}

impl SubgraphBuilder {
    /// An empty subgraph.
    pub fn new() -> SubgraphBuilder {
        SubgraphBuilder::default()
    }

    /// Adds a compiled node with the spec it was compiled from.
    pub fn add(&mut self, spec: Spec, node: Box<dyn Node>) -> NodeId {
        self.symbols.push(Symbol {
            spec,
            node: Arc::from(node),
        });
        self.links.push(Vec::new());
        NodeId(u32::try_from(self.symbols.len() - 1).expect("fewer than 2^32 nodes"))
    }

    /// How many nodes were added, outputs' included; they are numbered from 0 in the order
    /// added.
    pub fn len(&self) -> u32 {
        u32::try_from(self.symbols.len()).expect("fewer than 2^32 nodes")
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The node added as `id`, to ask for its ports while linking.
    ///
    /// # Panics
    /// If `id` was not returned by [`SubgraphBuilder::add`].
    pub fn node(&self, id: NodeId) -> &dyn Node {
        &*self.symbols[id.0 as usize].node
    }

    /// Links `from`'s output `port` to `to`'s input `to_port`, after its earlier links.
    pub fn link(&mut self, from: NodeId, port: OutPort, to: NodeId, to_port: InPort) {
        self.push(
            from,
            port,
            Target {
                node: to,
                port: to_port,
            },
        );
    }

    /// Links `from`'s output `port` to the subgraph's output `name`, made on first use, and
    /// returns that output's number on the enclosing node.
    ///
    /// An output is a node of the subgraph's own (kind [`OUTPUT_KIND`]) that writes what
    /// reaches it to the enclosing node's port, so a hop into it costs what any hop does.
    pub fn output(&mut self, from: NodeId, port: OutPort, name: &str) -> OutPort {
        let index = match self.outputs.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                let number = OutPort(u32::try_from(self.outputs.len()).expect("fewer outputs"));
                let spec = Spec {
                    kind: OUTPUT_KIND.to_owned(),
                    fields: Map::from([("port", Value::from(name.to_owned()))]),
                    ..Spec::default()
                };
                let node = self.add(spec, Box::new(Output(number)));
                self.outputs.push((name.to_owned(), node));
                self.outputs.len() - 1
            }
        };
        let node = self.outputs[index].1;
        self.link(from, port, node, InPort(0));
        OutPort(index as u32)
    }

    /// Makes every input of `node` an input of the subgraph, under the same name.
    pub fn inputs_of(&mut self, node: NodeId) {
        self.inputs = Inputs::Of(node);
    }

    /// Makes the subgraph's input `name` lead to `to`'s input `port`.
    pub fn input(&mut self, name: &str, to: NodeId, port: InPort) {
        let target = Target { node: to, port };
        match &mut self.inputs {
            Inputs::Named(named) => named.push((name.to_owned(), target)),
            Inputs::Of(_) => self.inputs = Inputs::Named(vec![(name.to_owned(), target)]),
        }
    }

    fn push(&mut self, from: NodeId, port: OutPort, target: Target) {
        let ports = &mut self.links[from.0 as usize];
        let slot = port.0 as usize;
        if ports.len() <= slot {
            ports.resize_with(slot + 1, Vec::new);
        }
        ports[slot].push(target);
    }

    /// The subgraph.
    pub fn build(self) -> Subgraph {
        Subgraph {
            graph: Arc::new(Graph::from_parts(self.symbols, self.links)),
            inputs: self.inputs,
            outputs: self.outputs.into_iter().map(|(name, _)| name).collect(),
        }
    }
}

impl Subgraph {
    /// The node and port an input leads to.
    fn target(&self, port: InPort) -> Option<Target> {
        match &self.inputs {
            Inputs::Of(node) => Some(Target { node: *node, port }),
            Inputs::Named(named) => named.get(port.0 as usize).map(|(_, target)| *target),
        }
    }

    /// Each node inside with its place, the enclosing node being at `cx`.
    fn places<'s>(&'s self, cx: &LoadCx) -> impl Iterator<Item = (&'s Symbol, LoadCx)> + 's {
        // Without outputs nothing inside can leave, so the nodes inside need not know where
        // the subgraph sits, and their own writes cost what they would at the top level.
        let outer = (!self.outputs.is_empty()).then(|| Arc::new(cx.clone()));
        self.graph
            .symbols()
            .iter()
            .enumerate()
            .map(move |(i, symbol)| {
                let place = LoadCx {
                    graph: Arc::clone(&self.graph),
                    node: NodeId(i as u32),
                    outer: outer.clone(),
                };
                (symbol, place)
            })
    }
}

/// A subgraph is the node that holds it: a composite kind (a `block`, a chart's instance)
/// compiles into one.
impl Node for Subgraph {
    /// The number of the input `name`, as the enclosing node reports it.
    fn in_port(&self, name: &str) -> Option<InPort> {
        match &self.inputs {
            Inputs::Of(node) => self.graph.node(*node).in_port(name),
            Inputs::Named(named) => named
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| InPort(i as u32)),
        }
    }

    /// The number of the output `name`, as the enclosing node reports it.
    fn out_port(&self, name: &str) -> Option<OutPort> {
        self.outputs
            .iter()
            .position(|n| n == name)
            .map(|i| OutPort(i as u32))
    }

    /// A packet that reached the enclosing node (whose context is `cx`) on `port`.
    ///
    /// A subgraph without outputs is entered with a plain call. One with outputs keeps the
    /// enclosing context for the writes that leave it, which costs one boxed future per entry:
    /// what a packet leaving a `block` through a linked port paid before.
    #[inline]
    fn handle<'a>(&'a self, cx: Cx<'a>, port: InPort, packet: Packet) -> Flow<'a> {
        let Some(target) = self.target(port) else {
            return Flow::Ready(Packet::error("no such input port"));
        };
        if self.outputs.is_empty() {
            return cx.enter(&self.graph, target, None, packet);
        }
        Flow::pending(async move {
            let around = cx;
            around
                .enter(&self.graph, target, Some(&around), packet)
                .await
        })
    }

    /// Whether the node an input leads to reads a request's body: a request reaches it.
    fn reads_body(&self, port: InPort, method: &str, path: &str) -> bool {
        match self.target(port) {
            Some(target) => self
                .graph
                .node(target.node)
                .reads_body(target.port, method, path),
            None => true,
        }
    }

    /// What the nodes inside ask of a source, together.
    fn needs(&self) -> Needs {
        self.graph.needs()
    }

    /// Loads the nodes inside, in order (a listener inside a block starts, as upstream). A
    /// node that fails leaves the ones before it loaded: `load` cannot await their `unload`,
    /// which the graph's failed load calls.
    fn load(&self, cx: LoadCx) -> Result<(), Error> {
        for (symbol, place) in self.places(&cx) {
            symbol.node.load(place)?;
        }
        Ok(())
    }

    /// Passes the move on to the nodes inside.
    fn moved(&self, cx: LoadCx) {
        if self.outputs.is_empty() {
            // Their places do not name the graph around, so they did not move.
            return;
        }
        for (symbol, place) in self.places(&cx) {
            symbol.node.moved(place);
        }
    }

    /// Stops the nodes inside, last first.
    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.graph.unload())
    }
}
