//! `block`: a sequence of inline child specs that acts as one node.
//!
//! The children (`specs`: `kind` plus the kind's fields; their `ports` are ignored, as
//! upstream did) are compiled with the same registry and chained: child `i`'s `out` feeds
//! child `i + 1`'s `in`, until a child lacks one of those ports. The block's inputs are the
//! first child's; its outputs are the last child's, and its `error` gathers every child's
//! `error`. So an error bubbling out of any child reaches the block's `error` when that is
//! linked, and otherwise travels back as the answer, through the children before it.
//!
//! The children form a [`Subgraph`] of their own, compiled once with the block: that subgraph
//! is the compiled node (its loading starts a listener among the children, as upstream). Only the
//! outputs the block's spec links become outputs of the subgraph; an unlinked one stays
//! unlinked inside, so the implicit response works through a block as through any node, and
//! costs nothing.

use serde::Deserialize;
use uniflow_core::{CompileCx, Node, NodeId, NodeSpec, Subgraph, SubgraphBuilder, port};
use uniflow_spec::{Diagnostic, Spec, bind};
use uniflow_value::Value;

/// The kind name.
pub const KIND: &str = "block";

/// The fields of a `block` spec.
#[derive(Debug, Deserialize)]
pub struct BlockSpec {
    /// The child specs, in order.
    pub specs: Vec<Value>,
}

impl NodeSpec for BlockSpec {
    const KIND: &'static str = KIND;

    fn compile(self, cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        if self.specs.is_empty() {
            return Err(vec![cx.error("specs", "a block needs at least one spec")]);
        }
        let mut problems = Vec::new();
        let mut children = SubgraphBuilder::new();
        let last = self.specs.len() - 1;
        for (i, value) in self.specs.iter().enumerate() {
            let path = format!("specs[{i}]");
            let nest = |d: Diagnostic| cx.nested(&path, d);
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
                Ok(node) => {
                    children.add(spec, node);
                }
                Err(ds) => problems.extend(ds.into_iter().map(nest)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Box::new(chain(children, cx)))
    }
}

/// Links the compiled children into a chain, and the block's linked ports to its outputs.
fn chain(mut children: SubgraphBuilder, cx: &CompileCx<'_>) -> Subgraph {
    let count = children.len();
    let last = NodeId(count - 1);
    children.inputs_of(NodeId(0));
    // The chain stops at the first child without `out`, or whose successor has no `in`: the
    // children after it are never reached, as upstream.
    for i in 0..count - 1 {
        let (from, to) = (NodeId(i), NodeId(i + 1));
        let (Some(out), Some(input)) = (
            children.node(from).out_port(port::OUT),
            children.node(to).in_port(port::IN),
        ) else {
            break;
        };
        children.link(from, out, to, input);
    }
    // Only the outputs the outer spec links become outputs; the outer graph asks for no
    // others.
    for name in cx.spec.ports.keys() {
        if name == port::ERROR {
            for i in 0..count {
                if let Some(error) = children.node(NodeId(i)).out_port(port::ERROR) {
                    children.output(NodeId(i), error, port::ERROR);
                }
            }
        } else if name != port::INIT
            && let Some(out) = children.node(last).out_port(name)
        {
            children.output(last, out, name);
        }
    }
    children.build()
}

#[cfg(test)]
mod tests {
    use uniflow_core::{Cx, Flow, Graph, InPort, OutPort, Packet, Registry};

    use super::*;

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
