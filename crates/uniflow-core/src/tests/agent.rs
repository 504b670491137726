//! An agent's taps: the frames a packet leaves at the ports it crosses, and a breakpoint that
//! holds it until released.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use uniflow_spec::{Format, parse};
use uniflow_value::Value;

use super::{registry, write};
use crate::agent::{self, Agent, Side};
use crate::{Build, Generation, Graph, Packet, Process};

/// `a` echoes to both `b` (answers 2) and `c` (answers 3), with `agent` watching.
async fn fan_out(agent: &Arc<Agent>) -> Arc<Graph> {
    let specs = parse(
        "- {kind: test-echo, name: a, ports: {out: [{name: b, port: in}, {name: c, port: in}]}}\n\
         - {kind: test-const, name: b, value: 2}\n\
         - {kind: test-const, name: c, value: 3}\n",
        Format::Yaml,
        None,
    )
    .unwrap();
    let generation = Generation::build(
        &Graph::empty(),
        specs,
        &Build {
            registry: &registry(),
            secrets: &|_, _| None,
            stale: &|_| false,
            held: &HashSet::new(),
            wrap: None,
            agent: Some(agent),
        },
    );
    assert!(
        generation.problems().is_empty(),
        "{}",
        generation.problems()
    );
    generation.start().await.map_err(|f| f.error).unwrap().0
}

#[tokio::test]
async fn a_fan_out_leaves_one_out_frame_with_the_merged_answer_and_an_in_frame_per_target() {
    let agent = Agent::new();
    let graph = fan_out(&agent).await;
    // The taps are beyond the symbols: the graph's nodes are the specs'.
    assert_eq!(graph.symbols().len(), 3);
    let proc = Process::new();
    let answer = write(&graph, &proc, "a", "in", Value::from("x")).await;
    assert_eq!(
        answer,
        Packet::Data(Value::from(vec![Value::Int(2), Value::Int(3)]))
    );
    let frames = agent::frames(&proc);
    let seen: Vec<(&str, &str, Side)> = frames
        .iter()
        .map(|f| (&*f.symbol, &*f.port, f.side))
        .collect();
    assert_eq!(
        seen,
        [
            ("a", "out", Side::Out),
            ("b", "in", Side::In),
            ("c", "in", Side::In)
        ]
    );
    assert_eq!(frames[0].output, Some(Packet::Data(Value::from("x"))));
    assert_eq!(frames[0].input, Some(answer));
    assert_eq!(frames[1].output, Some(Packet::Data(Value::Int(2))));
    assert!(frames.iter().all(|f| f.elapsed().is_some()));
    // The agent lists the process with its frames until well after it exits.
    proc.exit(None);
    let listed = agent.process(proc.id()).expect("kept after exit");
    assert_eq!((listed.status.as_str(), listed.frames), ("exited", 3));
}

#[tokio::test]
async fn a_breakpoint_holds_its_packet_until_resumed() {
    let agent = Agent::new();
    let graph = fan_out(&agent).await;
    let mut pauses = agent.pauses();
    let breakpoint = agent.add_breakpoint(Some(Arc::from("c")), None);
    let proc = Process::new();
    let task = {
        let (graph, proc) = (Arc::clone(&graph), Arc::clone(&proc));
        tokio::spawn(async move { write(&graph, &proc, "a", "in", Value::Null).await })
    };
    tokio::time::timeout(Duration::from_secs(10), pauses.changed())
        .await
        .expect("the packet to c pauses")
        .unwrap();
    let (frame, held_by) = agent.current().expect("a paused packet");
    assert_eq!(
        (&*frame.symbol, &*frame.port, held_by),
        ("c", "in", breakpoint.id)
    );
    assert!(frame.output.is_none(), "not answered while paused");
    assert!(!task.is_finished());
    assert!(agent.resume());
    let answer = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("resumed")
        .unwrap();
    assert_eq!(
        answer,
        Packet::Data(Value::from(vec![Value::Int(2), Value::Int(3)]))
    );
    assert!(!agent.resume(), "nothing is paused any more");
}

/// `test-no-body`: reads no request's body, and says so.
#[derive(serde::Deserialize)]
struct NoBodySpec {}

struct NoBody;

impl crate::NodeSpec for NoBodySpec {
    const KIND: &'static str = "test-no-body";
    fn compile(
        self,
        _cx: &crate::CompileCx<'_>,
    ) -> Result<Box<dyn crate::Node>, Vec<uniflow_spec::Diagnostic>> {
        Ok(Box::new(NoBody))
    }
}

impl crate::Node for NoBody {
    fn in_port(&self, _name: &str) -> Option<crate::InPort> {
        Some(crate::InPort(0))
    }
    fn out_port(&self, _name: &str) -> Option<crate::OutPort> {
        None
    }
    fn handle<'a>(
        &'a self,
        _cx: crate::Cx<'a>,
        _port: crate::InPort,
        packet: Packet,
    ) -> crate::Flow<'a> {
        crate::Flow::Ready(packet)
    }
    fn reads_body(&self, _port: crate::InPort, _method: &str, _path: &str) -> bool {
        false
    }
}

#[tokio::test]
async fn a_source_asks_through_the_taps_whether_its_targets_read_the_body() {
    let mut registry = registry();
    registry.add::<NoBodySpec>();
    let specs = parse(
        "- {kind: test-echo, name: a, ports: {out: [{name: b, port: in}]}}\n\
         - {kind: test-no-body, name: b}\n",
        Format::Yaml,
        None,
    )
    .unwrap();
    let agent = Agent::new();
    let generation = Generation::build(
        &Graph::empty(),
        specs,
        &Build {
            registry: &registry,
            secrets: &|_, _| None,
            stale: &|_| false,
            held: &HashSet::new(),
            wrap: None,
            agent: Some(&agent),
        },
    );
    let graph = generation.graph();
    let a = graph.find("a").unwrap();
    let [tap] = graph.targets(a, crate::OutPort(0)) else {
        panic!("one tap on a's out");
    };
    assert!(
        graph.symbols().len() <= tap.node.0 as usize,
        "a tap, beyond the symbols"
    );
    assert!(!graph.node(tap.node).reads_body(tap.port, "POST", "/"));
}
