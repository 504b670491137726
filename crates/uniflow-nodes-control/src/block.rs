//! `block`: a sequence of inline child specs that acts as one node.
//!
//! The children (`specs`: `kind` plus the kind's fields; their `ports` are ignored, as
//! upstream did) are compiled with the same registry and chained: child `i`'s `out` feeds
//! child `i + 1`'s `in`, until a child lacks one of those ports. The block's inputs are the
//! first child's; its outputs are the last child's, and its `error` gathers every child's
//! `error`. So an error bubbling out of any child reaches the block's `error` when that is
//! linked, and otherwise travels back as the answer, through the children before it.
//!
//! The children form a small graph of their own, compiled once with the block. A block output
//! that is linked becomes, inside it, a link to an *exit* node that writes to the block's port
//! in the outer graph; an unlinked one stays unlinked, so the implicit response works through
//! a block as through any node, and costs nothing.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde::Deserialize;
use uniflow_core::{
    CompileCx, Cx, Error, Flow, Graph, InPort, LoadCx, Node, NodeId, NodeSpec, OutPort, Packet,
    Process, Registry, port,
};
use uniflow_spec::{Diagnostic, PortRef, Spec, bind};
use uniflow_value::{Map, Value};

/// The kind name.
pub const KIND: &str = "block";

/// How many block exits one process may have in flight. A cycle through a block (an `error`
/// wired back upstream) re-enters the outer graph at every turn, and each entry starts the
/// core's hop count afresh, so this is what stops such a cycle before the stack overflows.
/// Legitimate flows nest blocks a few levels deep and run a few exits at once.
pub const MAX_EXITS: usize = 64;

/// The fields of a `block` spec.
#[derive(Debug, Deserialize)]
pub struct BlockSpec {
    /// The child specs, in order.
    pub specs: Vec<Value>,
}

/// The first child: the block's inputs are its inputs.
const FIRST: NodeId = NodeId(0);

/// Internal kinds of a block's inner graph: a child compiled beforehand, and an exit.
const CHILD_KIND: &str = "block/child";
const EXIT_KIND: &str = "block/exit";

/// Where a block's exits write: the block's place in the outer graph, known once it loads.
/// Held weakly, since the outer graph owns the block.
#[derive(Default)]
struct Outer(OnceLock<(Weak<Graph>, NodeId)>);

/// The compiled `block`.
pub struct BlockNode {
    inner: Arc<Graph>,
    /// The linked output ports by name, numbered in the order of the spec's `ports`.
    exits: Vec<(String, OutPort)>,
    outer: Arc<Outer>,
}

impl NodeSpec for BlockSpec {
    const KIND: &'static str = KIND;

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        if self.specs.is_empty() {
            return Err(vec![cx.error("specs", "a block needs at least one spec")]);
        }
        let mut problems = Vec::new();
        let mut children = Vec::with_capacity(self.specs.len());
        let last = self.specs.len() - 1;
        for (i, value) in self.specs.iter().enumerate() {
            let path = format!("specs[{i}]");
            let nest = |d: Diagnostic| nest(cx, &path, d);
            let mut spec = match Spec::from_value_in(value, &path, &cx.spec.namespace)
                .and_then(|spec| bind(&spec, &path, &|_, _| None))
            {
                Ok(spec) => spec,
                Err(ds) => {
                    problems.extend(ds.into_iter().map(nest));
                    continue;
                }
            };
            // A child's own `ports` are ignored; in their place it learns which of its outputs
            // the block will link, so that a nested block exposes exactly those.
            spec.ports = cx
                .spec
                .ports
                .keys()
                .filter(|name| (i == last && *name != port::INIT) || *name == port::ERROR)
                .map(String::as_str)
                .chain((i < last).then_some(port::OUT))
                .map(|name| (name.to_owned(), Vec::new()))
                .collect();
            match cx.registry.compile(&spec, &path) {
                Ok(node) => children.push(node),
                Err(ds) => problems.extend(ds.into_iter().map(nest)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        assemble(children, cx)
    }
}

/// Places a child's diagnostic in the block's spec: `specs[1].code` of spec `block`.
fn nest(cx: &CompileCx<'_>, prefix: &str, d: Diagnostic) -> Diagnostic {
    let path = if d.path.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}.{}", d.path)
    };
    cx.error(path, d.message)
}

fn link(name: String, port: &str) -> PortRef {
    PortRef {
        id: None,
        name: Some(name),
        port: port.to_owned(),
    }
}

/// Wires the compiled children into the block's inner graph.
fn assemble(
    children: Vec<Box<dyn Node>>,
    cx: &CompileCx<'_>,
) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
    let last = children.len() - 1;
    // Only the outputs the outer spec links get an exit; the outer graph asks for no others.
    let mut exits: Vec<(String, OutPort)> = Vec::new();
    for name in cx.spec.ports.keys() {
        let exists = if name == port::ERROR {
            children.iter().any(|c| c.out_port(port::ERROR).is_some())
        } else {
            name != port::INIT && children[last].out_port(name).is_some()
        };
        if exists {
            exits.push((name.clone(), OutPort(exits.len() as u32)));
        }
    }

    let mut specs: Vec<Spec> = Vec::with_capacity(children.len() + exits.len());
    for i in 0..children.len() {
        specs.push(Spec {
            kind: CHILD_KIND.to_owned(),
            name: Some(i.to_string()),
            fields: Map::from([("index", Value::from(i))]),
            ..Spec::default()
        });
    }
    // The chain stops at the first child without `out`, or whose successor has no `in`: the
    // children after it are never reached, as upstream.
    for i in 0..last {
        if children[i].out_port(port::OUT).is_none() || children[i + 1].in_port(port::IN).is_none()
        {
            break;
        }
        specs[i].ports.insert(
            port::OUT.to_owned(),
            vec![link((i + 1).to_string(), port::IN)],
        );
    }
    for (k, (name, number)) in exits.iter().enumerate() {
        let exit = format!("exit{k}");
        specs.push(Spec {
            kind: EXIT_KIND.to_owned(),
            name: Some(exit.clone()),
            fields: Map::from([("port", Value::from(number.0 as u64))]),
            ..Spec::default()
        });
        let sources: Vec<usize> = if name == port::ERROR {
            (0..children.len())
                .filter(|&i| children[i].out_port(port::ERROR).is_some())
                .collect()
        } else {
            vec![last]
        };
        for i in sources {
            specs[i]
                .ports
                .entry(name.clone())
                .or_default()
                .push(link(exit.clone(), port::IN));
        }
    }

    let outer = Arc::new(Outer::default());
    let slots: Arc<Slots> = Arc::new(Mutex::new(children.into_iter().map(Some).collect()));
    let mut registry = Registry::new();
    registry.add_with(CHILD_KIND, move |spec: ChildSpec, _cx| {
        let node = slots.lock().unwrap_or_else(|e| e.into_inner())[spec.index].take();
        Ok(node.expect("each child is placed once"))
    });
    let exit_outer = Arc::clone(&outer);
    registry.add_with(EXIT_KIND, move |spec: ExitSpec, _cx| {
        Ok(Box::new(ExitNode {
            outer: Arc::clone(&exit_outer),
            port: OutPort(spec.port),
        }))
    });
    // Every port was checked above, so this cannot fail short of a bug; say so if it does.
    let inner = Graph::compile(specs, &registry, &|_, _| None)
        .map_err(|ds| vec![cx.error("specs", format!("internal error wiring the block: {ds}"))])?;
    Ok(Box::new(BlockNode {
        inner,
        exits,
        outer,
    }))
}

/// The compiled children, each taken once by the inner graph's compile.
type Slots = Mutex<Vec<Option<Box<dyn Node>>>>;

#[derive(Deserialize)]
struct ChildSpec {
    index: usize,
}

#[derive(Deserialize)]
struct ExitSpec {
    port: u32,
}

impl Node for BlockNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        self.inner.node(FIRST).in_port(name)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        self.exits
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, port)| *port)
    }

    #[inline]
    fn handle<'a>(&'a self, cx: Cx<'a>, port: InPort, packet: Packet) -> Flow<'a> {
        let inner = Cx::new(&self.inner, cx.proc(), FIRST);
        self.inner.node(FIRST).handle(inner, port, packet)
    }

    /// A request reaches the first child: it says.
    fn reads_body(&self, port: InPort, method: &str, path: &str) -> bool {
        self.inner.node(FIRST).reads_body(port, method, path)
    }

    /// Records the block's place for its exits, then loads the children (a listener inside a
    /// block starts, as upstream). A child that fails to load leaves the ones before it
    /// loaded: `load` cannot await their `unload`.
    fn load(&self, cx: LoadCx) -> Result<(), Error> {
        let _ = self.outer.0.set((Arc::downgrade(&cx.graph), cx.node));
        for i in 0..self.inner.symbols().len() {
            self.inner.node(NodeId(i as u32)).load(LoadCx {
                graph: Arc::clone(&self.inner),
                node: NodeId(i as u32),
            })?;
        }
        Ok(())
    }

    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.inner.unload())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Writes what reaches it to the block's output port in the outer graph.
struct ExitNode {
    outer: Arc<Outer>,
    port: OutPort,
}

impl Node for ExitNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        (name == port::IN).then_some(InPort(0))
    }

    fn out_port(&self, _name: &str) -> Option<OutPort> {
        None
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Some((graph, block)) = self.outer.0.get() else {
            return Flow::Ready(Packet::error("the block's graph is not loaded"));
        };
        let Some(graph) = graph.upgrade() else {
            return Flow::Ready(Packet::error("the block's graph is unloaded"));
        };
        let Some(guard) = ExitGuard::enter(cx.proc()) else {
            return Flow::Ready(Packet::error(format!(
                "flow left blocks more than {MAX_EXITS} times at once; is there a cycle through a block?"
            )));
        };
        let (block, port, proc) = (*block, self.port, cx.proc());
        // The outer graph is reached through an `Arc` this call owns, so the write is boxed:
        // one allocation per packet leaving a block through a linked port.
        Flow::pending(async move {
            let _guard = guard;
            Cx::new(&graph, proc, block).write(port, packet).await
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Counts a process's block exits in flight; see [`MAX_EXITS`].
struct ExitGuard<'a>(&'a Process);

/// The process-local key of the count. Nodes that keep per-process state key it by their
/// address, a word-aligned heap allocation, so an odd key is nobody else's.
const EXITS_KEY: usize = 0x626c_6f63_6b01;

#[derive(Default)]
struct Exits(usize);

impl<'a> ExitGuard<'a> {
    fn enter(proc: &'a Arc<Process>) -> Option<ExitGuard<'a>> {
        proc.with_local::<Exits, _>(EXITS_KEY, |n| (n.0 < MAX_EXITS).then(|| n.0 += 1))?;
        Some(ExitGuard(proc))
    }
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        // An exited process has dropped its data, so the count may be gone already.
        self.0
            .with_local::<Exits, _>(EXITS_KEY, |n| n.0 = n.0.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cases() {
        crate::tests::check_file("block.yaml").await;
    }

    /// Reads the bodies of requests to `/read` only.
    struct Picky;

    #[derive(Deserialize)]
    struct PickySpec {}

    impl Node for Picky {
        fn in_port(&self, name: &str) -> Option<InPort> {
            (name == port::IN).then_some(InPort(0))
        }

        fn out_port(&self, name: &str) -> Option<OutPort> {
            (name == port::OUT).then_some(OutPort(0))
        }

        fn handle<'a>(&'a self, _cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
            Flow::Ready(packet)
        }

        fn reads_body(&self, _port: InPort, _method: &str, path: &str) -> bool {
            path == "/read"
        }

        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    #[test]
    fn a_block_reads_a_request_body_when_its_first_child_does() {
        let mut registry = Registry::new();
        registry.add::<BlockSpec>();
        registry.add_with("picky", |_: PickySpec, _| Ok(Box::new(Picky)));
        uniflow_core::testing::register(&mut registry);
        let yaml = "- {kind: block, name: b, specs: [{kind: picky}, {kind: test-echo}]}\n\
                    - {kind: block, name: later, specs: [{kind: test-echo}, {kind: picky}]}\n";
        let specs = uniflow_spec::parse(yaml, uniflow_spec::Format::Yaml, None).unwrap();
        let graph = Graph::compile(specs, &registry, &|_, _| None).unwrap();
        let block = |name| graph.node(graph.find(name).unwrap());
        let port = block("b").in_port(port::IN).unwrap();
        assert!(block("b").reads_body(port, "POST", "/read"));
        assert!(!block("b").reads_body(port, "POST", "/skip"));
        // The first child decides; one behind it is reached through it.
        assert!(block("later").reads_body(port, "POST", "/skip"));
    }
}
