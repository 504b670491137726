//! The node contract and the call that carries a packet from an output port to its targets.
//!
//! A write is a call that returns the answer (see `ARCHITECTURE.md`): with no link the packet
//! itself is the answer (the implicit response); with one link the target's `handle` is called
//! directly; with several the targets' answers are gathered in link order and merged. Most nodes
//! finish without awaiting, so an answer is usually [`Flow::Ready`] and a hop costs a virtual
//! call; only a node that must wait returns a boxed [`Flow::Pending`].

use std::any::Any;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use uniflow_value::{ErrorValue, Value};

use crate::Error;
use crate::graph::{Graph, Target};
use crate::packet::{Packet, merge};
use crate::process::{Process, ProcessSlot};

/// An input port of a node, as the node numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InPort(pub u32);

/// An output port of a node, as the node numbers them. Numbers should be small and dense: the
/// graph keeps a link table slot per number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutPort(pub u32);

/// A node's index in its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// How deep a chain of writes may nest before it is cut with an error. A cycle in the graph
/// (an `error` port wired back upstream) would otherwise recurse until the stack overflows and
/// take the whole server down.
pub const MAX_DEPTH: u32 = 256;

/// A boxed answer future, for nodes that wait (timers, I/O, joins).
pub type BoxFlow<'a> = Pin<Box<dyn Future<Output = Packet> + Send + 'a>>;

/// The answer to a packet, ready now or later.
#[must_use = "an answer must be awaited or returned, or the writer waits forever"]
pub enum Flow<'a> {
    /// The answer is known.
    Ready(Packet),
    /// The answer comes later.
    Pending(BoxFlow<'a>),
}

impl<'a> Flow<'a> {
    /// A flow that waits for `future`.
    pub fn pending(future: impl Future<Output = Packet> + Send + 'a) -> Flow<'a> {
        Flow::Pending(Box::pin(future))
    }

    /// Transforms the answer once known, without boxing when it is known already.
    pub fn map(self, f: impl FnOnce(Packet) -> Packet + Send + 'a) -> Flow<'a> {
        match self {
            Flow::Ready(p) => Flow::Ready(f(p)),
            Flow::Pending(fut) => Flow::pending(async move { f(fut.await) }),
        }
    }

    /// Continues with another flow once the answer is known (for nodes that write again
    /// depending on the answer, such as `call` or the listener's error port).
    pub fn then(self, f: impl FnOnce(Packet) -> Flow<'a> + Send + 'a) -> Flow<'a> {
        match self {
            Flow::Ready(p) => f(p),
            Flow::Pending(fut) => Flow::pending(async move { f(fut.await).await }),
        }
    }
}

impl<'a> Flow<'a> {
    /// Waits for every flow and merges their answers in order (the fan-out rule), without
    /// boxing when every answer is ready. Nodes that write one packet to each of several ports
    /// (`split`) answer with this too.
    pub fn merge_all(flows: Vec<Flow<'a>>) -> Flow<'a> {
        if flows.iter().all(|f| matches!(f, Flow::Ready(_))) {
            let answers = flows
                .into_iter()
                .map(|f| match f {
                    Flow::Ready(p) => p,
                    Flow::Pending(_) => unreachable!("checked above"),
                })
                .collect();
            return Flow::Ready(merge(answers));
        }
        let futures = flows.into_iter().map(IntoFuture::into_future);
        Flow::pending(async move { merge(futures_util::future::join_all(futures).await) })
    }
}

impl<'a> IntoFuture for Flow<'a> {
    type Output = Packet;
    type IntoFuture = FlowFuture<'a>;

    fn into_future(self) -> FlowFuture<'a> {
        match self {
            Flow::Ready(p) => FlowFuture::Ready(Some(p)),
            Flow::Pending(fut) => FlowFuture::Pending(fut),
        }
    }
}

/// The future of a [`Flow`].
pub enum FlowFuture<'a> {
    /// Resolves at the first poll.
    Ready(Option<Packet>),
    /// Polls the boxed future.
    Pending(BoxFlow<'a>),
}

impl Future for FlowFuture<'_> {
    type Output = Packet;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Packet> {
        match self.get_mut() {
            FlowFuture::Ready(p) => {
                Poll::Ready(p.take().expect("FlowFuture polled after completion"))
            }
            FlowFuture::Pending(fut) => fut.as_mut().poll(cx),
        }
    }
}

/// A compiled node.
///
/// A node names its ports ([`in_port`](Node::in_port), [`out_port`](Node::out_port)) and
/// answers packets ([`handle`](Node::handle)). It never holds a reference to another node:
/// it writes through its [`Cx`], and the graph resolves the targets.
pub trait Node: Any + Send + Sync {
    /// The number of an input port, or `None` if the node has no such port.
    fn in_port(&self, name: &str) -> Option<InPort>;

    /// The number of an output port, or `None` if the node has no such port.
    fn out_port(&self, name: &str) -> Option<OutPort>;

    /// Handles one packet arriving on `port` and returns its answer.
    fn handle<'a>(&'a self, cx: Cx<'a>, port: InPort, packet: Packet) -> Flow<'a>;

    /// Whether the node, given on `port` a request with this method and path (an HTTP
    /// request's), reads its body or passes it to a node that may. A source that decodes
    /// request bodies asks the nodes it writes a request to, and leaves the body as the bytes
    /// that came when none reads it: a client then cannot make the server parse a body that
    /// nothing looks at.
    ///
    /// The default is yes. A node says no only when it knows: one that answers such a request
    /// from its method and path alone (a route that does not exist), or that passes it on and
    /// has asked the node it passes it to (a composite asks its first inner node).
    fn reads_body(&self, port: InPort, method: &str, path: &str) -> bool {
        let _ = (port, method, path);
        true
    }

    /// What the node asks of the source whose requests reach it, beyond the packet (see
    /// [`Needs`]). A source asks every node of its graph, and of the graphs around it, once,
    /// so a graph whose nodes ask nothing pays nothing for what others need. A composite
    /// answers for the nodes inside it.
    fn needs(&self) -> Needs {
        Needs::NONE
    }

    /// Whether the node answers every packet it passes on with the answer that its write of it
    /// got, unchanged (a router). Nodes that hand a value out of the graph by reference (a proxy's
    /// streamed body) follow such chains back to a source.
    fn relays_answers(&self) -> bool {
        false
    }

    /// Whether the answers to the node's writes leave the graph as they are (a listener sends
    /// them as responses).
    fn answers_leave(&self) -> bool {
        false
    }

    /// Called once the whole graph is compiled and linked: a source node (a listener) starts
    /// here.
    ///
    /// # Errors
    /// When the node cannot start (a port already in use); the graph then fails to load.
    fn load(&self, cx: LoadCx) -> Result<(), Error> {
        let _ = cx;
        Ok(())
    }

    /// The node this one wraps, when it is a wrapper that adds something around another node
    /// (counting its packets, say): `downcast_ref` on a `dyn Node` then finds the wrapped
    /// node's type.
    fn inner(&self) -> Option<&dyn Node> {
        None
    }

    /// Called on a new node that replaces `previous` (compiled from an earlier version of the
    /// same spec, still loaded) in a new generation of the graph, before its [`Node::load`].
    /// A node may take over here what the previous one holds and can hand over: a listener on
    /// the same address takes its socket, so the port never stops listening.
    fn adopt(&self, previous: &dyn Node) {
        let _ = previous;
    }

    /// Called on a loaded node that a reload carries, unchanged, into a new generation of its
    /// graph: `cx` is its place there. A node that keeps its place for work it starts later (a
    /// listener's requests) takes the new one, so that its next work runs on the new graph;
    /// work already started finishes on the graph it began on. A composite passes the move on
    /// to the nodes inside.
    fn moved(&self, cx: LoadCx) {
        let _ = cx;
    }

    /// Called when the graph is unloaded: a source stops accepting work and finishes what it
    /// has. Also called on a node whose [`Node::load`] failed, so that it releases what it
    /// started before failing; it must then do nothing for what never started.
    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

impl dyn Node {
    /// Whether the node is of the concrete type `T`, or wraps one (see [`Node::inner`]).
    pub fn is<T: Node>(&self) -> bool {
        self.downcast_ref::<T>().is_some()
    }

    /// The node as its concrete type, for tools (tests, the CLI) that need a kind's extras; a
    /// wrapper answers for the node it wraps.
    pub fn downcast_ref<T: Node>(&self) -> Option<&T> {
        match (self as &dyn Any).downcast_ref::<T>() {
            Some(node) => Some(node),
            None => self.inner()?.downcast_ref::<T>(),
        }
    }
}

/// What a node may ask of the source (a listener) whose requests reach it: see
/// [`Node::needs`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Needs {
    /// It may take over the request's connection (a gateway upgrades it to a WebSocket).
    pub connection: bool,
    /// It reads the client's address from the request's process (a proxy's
    /// `X-Forwarded-For`).
    pub peer: bool,
    /// It may answer with a response it leaves in the process for the source to send (a
    /// proxy streaming an upstream body).
    pub streams: bool,
}

impl Needs {
    /// Nothing.
    pub const NONE: Needs = Needs {
        connection: false,
        peer: false,
        streams: false,
    };

    /// What either asks.
    #[must_use]
    pub fn union(self, other: Needs) -> Needs {
        Needs {
            connection: self.connection || other.connection,
            peer: self.peer || other.peer,
            streams: self.streams || other.streams,
        }
    }

    /// This, and the connection.
    #[must_use]
    pub fn connection(mut self) -> Needs {
        self.connection = true;
        self
    }

    /// This, and the client's address.
    #[must_use]
    pub fn peer(mut self) -> Needs {
        self.peer = true;
        self
    }

    /// This, and leaving streamed responses.
    #[must_use]
    pub fn streams(mut self) -> Needs {
        self.streams = true;
        self
    }
}

/// Where a node sits, owned: its graph, its id in it, and for a node inside a [`Subgraph`]
/// (a `block`), where that subgraph's node sits in turn. A node gets one at load; a node that
/// starts work later, outside any packet's call (a listener's requests, a forked child, a
/// WebSocket's messages), writes through it with [`LoadCx::run`].
///
/// [`Subgraph`]: crate::Subgraph
#[derive(Clone)]
pub struct LoadCx {
    /// The graph.
    pub graph: Arc<Graph>,
    /// The node's id.
    pub node: NodeId,
    /// The node whose subgraph `graph` is, when it is one.
    pub outer: Option<Arc<LoadCx>>,
}

/// Where a node that starts work of its own (a timer, a store watcher, a test run) writes from:
/// set by [`Node::load`] and by every [`Node::moved`] into a new generation, cleared by
/// [`Node::unload`], and read for each event, so an event after a reload starts in the graph
/// that runs then. Clones share one place. A lock rather than a snapshot swap, because it is
/// read once per event of such a source, never per packet.
#[derive(Clone, Default)]
pub struct Place(Arc<Mutex<Option<LoadCx>>>);

impl Place {
    /// Puts the node at `cx`.
    pub fn set(&self, cx: LoadCx) {
        *self.lock() = Some(cx);
    }

    /// Forgets where the node was: it is unloaded.
    pub fn clear(&self) {
        self.lock().take();
    }

    /// Where the node is now; `None` before it is loaded and after it is unloaded.
    pub fn get(&self) -> Option<LoadCx> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Option<LoadCx>> {
        // A panic while the lock was held cannot leave an `Option` half-written.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A write from outside any call, boxed: see [`LoadCx::run`]. The second argument only says
/// that `'s` outlives `'c`, so the flow may borrow what the closure holds.
type Start<'s> = Box<dyn for<'c> FnOnce(Cx<'c>, Outlives<'c, 's>) -> Flow<'c> + Send + 's>;

/// A witness that `'long` outlives `'short`.
type Outlives<'short, 'long> = std::marker::PhantomData<&'short &'long ()>;

impl LoadCx {
    /// What the nodes of this node's graph, and of every graph around it, ask of a source.
    pub fn needs(&self) -> Needs {
        let mut needs = self.graph.needs();
        let mut outer = self.outer.as_deref();
        while let Some(place) = outer {
            needs = needs.union(place.graph.needs());
            outer = place.outer.as_deref();
        }
        needs
    }

    /// The place of node `node` at the top level of `graph`.
    pub fn top(graph: Arc<Graph>, node: NodeId) -> LoadCx {
        LoadCx {
            graph,
            node,
            outer: None,
        }
    }

    /// Runs `f` with the context of this node working for `proc`, and answers what `f`
    /// answers. For a node at the top level that costs nothing; inside a subgraph the contexts
    /// of the nodes around it are built first (boxed), so writes can leave the subgraph.
    pub fn run<'s, F>(&'s self, proc: &'s Arc<Process>, f: F) -> Flow<'s>
    where
        F: for<'c> FnOnce(Cx<'c>) -> Flow<'c> + Send + 's,
    {
        self.run_with(ProcRef::Given(proc), f)
    }

    /// [`LoadCx::run`] for work whose process is made only if a node asks for it (a
    /// listener's request: see [`ProcessSlot`]).
    pub fn run_lazy<'s, F>(&'s self, slot: &'s ProcessSlot, f: F) -> Flow<'s>
    where
        F: for<'c> FnOnce(Cx<'c>) -> Flow<'c> + Send + 's,
    {
        self.run_with(ProcRef::Lazy(slot), f)
    }

    fn run_with<'s, F>(&'s self, proc: ProcRef<'s>, f: F) -> Flow<'s>
    where
        F: for<'c> FnOnce(Cx<'c>) -> Flow<'c> + Send + 's,
    {
        match &self.outer {
            None => f(self.outermost_cx(proc)),
            Some(_) => self.run_nested(proc, Box::new(move |cx, _| f(cx))),
        }
    }

    /// The context of this node, taken to be at the top level.
    fn outermost_cx<'s>(&'s self, proc: ProcRef<'s>) -> Cx<'s> {
        Cx {
            graph: &self.graph,
            proc,
            node: self.node,
            depth: 0,
            outer: None,
        }
    }

    /// Builds the contexts from the outermost graph in, each held by the future of the level
    /// around it, then runs `f` in the innermost. Boxed: the nesting depth is only known now.
    fn run_nested<'s>(&'s self, proc: ProcRef<'s>, f: Start<'s>) -> Flow<'s> {
        let Some(outer) = &self.outer else {
            return f(self.outermost_cx(proc), std::marker::PhantomData);
        };
        let (graph, node) = (&self.graph, self.node);
        outer.run_nested(
            proc,
            Box::new(move |around: Cx<'_>, _| {
                Flow::pending(async move {
                    let around = around;
                    let cx = Cx {
                        graph,
                        proc: around.proc,
                        node,
                        depth: around.depth,
                        outer: Some(&around),
                    };
                    f(cx, std::marker::PhantomData).await
                })
            }),
        )
    }
}

/// The context of one packet's handling: the graph, the process and the node handling it.
///
/// It is `Copy` and lives on the stack; writing through it costs no allocation.
#[derive(Clone, Copy)]
pub struct Cx<'a> {
    graph: &'a Arc<Graph>,
    proc: ProcRef<'a>,
    node: NodeId,
    depth: u32,
    /// Inside a subgraph that has outputs: the context of the subgraph's node in the graph
    /// around it, where those outputs lead.
    outer: Option<&'a Cx<'a>>,
}

/// The process of a [`Cx`]: given, or made when first asked for.
#[derive(Clone, Copy)]
enum ProcRef<'a> {
    Given(&'a Arc<Process>),
    Lazy(&'a ProcessSlot),
}

impl<'a> Cx<'a> {
    /// The context of `node` handling work for `proc`; sources (`init`, a forked child's
    /// flow) start here.
    pub fn new(graph: &'a Arc<Graph>, proc: &'a Arc<Process>, node: NodeId) -> Cx<'a> {
        Cx {
            graph,
            proc: ProcRef::Given(proc),
            node,
            depth: 0,
            outer: None,
        }
    }

    /// [`Cx::new`] for work whose process is made only if a node asks for it (a listener's
    /// request: see [`ProcessSlot`]).
    pub fn lazy(graph: &'a Arc<Graph>, slot: &'a ProcessSlot, node: NodeId) -> Cx<'a> {
        Cx {
            graph,
            proc: ProcRef::Lazy(slot),
            node,
            depth: 0,
            outer: None,
        }
    }

    /// The process this packet belongs to (made now, for a lazy one).
    pub fn proc(&self) -> &'a Arc<Process> {
        match self.proc {
            ProcRef::Given(proc) => proc,
            ProcRef::Lazy(slot) => slot.get(),
        }
    }

    /// The graph.
    pub fn graph(&self) -> &'a Arc<Graph> {
        self.graph
    }

    /// The node handling the packet.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The same node working for another process (a forked child).
    pub fn with_proc<'b>(&self, proc: &'b Arc<Process>) -> Cx<'b>
    where
        'a: 'b,
    {
        Cx {
            graph: self.graph,
            proc: ProcRef::Given(proc),
            node: self.node,
            depth: self.depth,
            outer: self.outer,
        }
    }

    /// Whether `port` exists in the link table: it has links, or a higher-numbered port of
    /// this node does. Nodes with lazily numbered outputs (`out[N]`) answer `None` for a
    /// write to a port that does not exist, as upstream did.
    pub fn port_exists(&self, port: OutPort) -> bool {
        self.graph.port_slots(self.node) > port.0 as usize
    }

    /// Whether `port` has at least one link.
    pub fn is_linked(&self, port: OutPort) -> bool {
        !self.graph.targets(self.node, port).is_empty()
    }

    /// Writes `packet` to this node's output `port` and returns the answer: the packet itself
    /// when the port has no links (the implicit response), the target's answer for one link,
    /// the merge of all answers in link order for several.
    #[inline]
    pub fn write(self, port: OutPort, packet: Packet) -> Flow<'a> {
        self.write_to(self.graph.targets(self.node, port), packet)
    }

    /// Writes to an explicit list of targets (the graph's `init` links).
    #[inline]
    pub(crate) fn write_to(self, targets: &'a [Target], packet: Packet) -> Flow<'a> {
        match targets {
            [] => Flow::Ready(packet),
            [target] => self.deliver(*target, packet),
            targets => self.fan_out(targets, packet),
        }
    }

    /// Writes a payload; shorthand for `write(port, Packet::Data(value))`.
    #[inline]
    pub fn send(self, port: OutPort, value: Value) -> Flow<'a> {
        self.write(port, Packet::Data(value))
    }

    /// One hop, within this context's graph. The body is [`Cx::enter`]'s, written out: calling
    /// it costs every hop two instructions more (`scripts/bench-gate`: `core.port_hop` 248
    /// against 246, `nodes.loop_3` 1336 against 1314). Always inlined: since a node is shared
    /// between generations (an `Arc`, whose data offset is computed per lookup), the compiler
    /// stopped inlining it on its own, and the call cost `core.port_hop` 14 instructions.
    #[inline(always)]
    fn deliver(self, target: Target, packet: Packet) -> Flow<'a> {
        if self.depth >= MAX_DEPTH {
            return Flow::Ready(too_deep());
        }
        let cx = Cx {
            graph: self.graph,
            proc: self.proc,
            node: target.node,
            depth: self.depth + 1,
            outer: self.outer,
        };
        self.graph.node(target.node).handle(cx, target.port, packet)
    }

    /// Writes `packet` to this node's only output without counting a hop: a tap (see
    /// [`crate::agent`]) passes the packet on as if it were not there.
    pub(crate) fn relay(self, packet: Packet) -> Flow<'a> {
        Cx {
            depth: self.depth.saturating_sub(1),
            ..self
        }
        .write(OutPort(0), packet)
    }

    /// Hands `packet` to `target` in `graph`, a subgraph entered from this node, one hop
    /// deeper; `outer` is this context, when the subgraph has outputs.
    pub(crate) fn enter<'b>(
        &self,
        graph: &'b Arc<Graph>,
        target: Target,
        outer: Option<&'b Cx<'b>>,
        packet: Packet,
    ) -> Flow<'b>
    where
        'a: 'b,
    {
        if self.depth >= MAX_DEPTH {
            return Flow::Ready(too_deep());
        }
        let cx = Cx {
            graph,
            proc: self.proc,
            node: target.node,
            depth: self.depth + 1,
            outer,
        };
        graph.node(target.node).handle(cx, target.port, packet)
    }

    /// Leaves a subgraph: writes `packet` to output `port` of the subgraph's node, in the
    /// graph around it. The hop count goes on from here, so a cycle through a subgraph is cut
    /// like any other.
    #[cold]
    pub(crate) fn exit(self, port: OutPort, packet: Packet) -> Flow<'a> {
        match self.outer {
            Some(outer) => Cx {
                depth: self.depth,
                ..*outer
            }
            .write(port, packet),
            None => Flow::Ready(Packet::error(
                "a subgraph's output was written outside a call into the subgraph",
            )),
        }
    }

    /// This context's place, owned, for work that outlives the call (a forked child).
    pub fn detach(&self) -> LoadCx {
        LoadCx {
            graph: Arc::clone(self.graph),
            node: self.node,
            outer: self.outer.map(|outer| Arc::new(outer.detach())),
        }
    }

    fn fan_out(self, targets: &'a [Target], packet: Packet) -> Flow<'a> {
        // Values are reference-counted, so each target's copy is a pointer bump.
        Flow::merge_all(
            targets
                .iter()
                .map(|t| self.deliver(*t, packet.clone()))
                .collect(),
        )
    }
}

/// The answer to a write nested deeper than [`MAX_DEPTH`].
#[cold]
fn too_deep() -> Packet {
    Packet::Data(Value::Error(ErrorValue::new(format!(
        "flow nested deeper than {MAX_DEPTH} hops; is there a cycle in the graph?"
    ))))
}
