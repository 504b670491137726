//! Watching a graph run: the frames packets leave at the ports they cross, the processes they
//! belong to, and breakpoints that hold a packet until it is released. The debugger
//! (`start --debug`) and `assert`'s `target` (`uniflow test`) read the same frames.
//!
//! A graph built without an [`Agent`] has none of this and pays nothing for it. A graph built
//! with one (see [`Build::agent`](crate::Build::agent)) has a *tap* on every link: a write to
//! an output port goes to a tap that records the out-port frame (the packet sent, then the
//! answer back) and hands the packet to one tap per target, which records the in-port frame
//! (the request, then the answer) and delivers it. Taps are nodes of the graph beyond its
//! symbols, like the stand-ins for missing nodes, and do not count as hops, so the depth
//! budget holds as it does without them.
//!
//! A frame is kept with its process. An agent keeps every running process's frames, at most
//! [`MAX_FRAMES`] each (later ones are not recorded), and the frames of the last
//! [`KEEP_EXITED`] processes that exited, so `frames` can still show a request that ended;
//! older ones are dropped. Memory is so bounded by what runs at once.
//!
//! A breakpoint matches frames by symbol and port (either may be left open). A matching
//! packet waits in its tap until released, before it goes on; only its own process waits,
//! since every other request runs on its own task. Paused packets queue in the order they
//! arrived; the first is the *current* one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use uniflow_value::{ErrorValue, Map, Value};
use uuid::Uuid;

use crate::node::{Cx, Flow, InPort, Node, OutPort};
use crate::packet::Packet;
use crate::process::{Local, Process};

/// How many frames one process keeps; the ones after are not recorded. A process lives for a
/// request, but a WebSocket connection's lives as long as the connection.
pub const MAX_FRAMES: usize = 4096;

/// How many exited processes keep their frames, the latest.
pub const KEEP_EXITED: usize = 64;

/// Which side of a node a frame was recorded on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// An input port: `input` is the request, `output` the answer.
    In,
    /// An output port: `output` is the packet sent, `input` the answer that came back.
    Out,
}

/// What one packet did at one port of one node.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The process.
    pub process: Uuid,
    /// The node: its name, else its id.
    pub symbol: Arc<str>,
    /// The port, as the spec names it.
    pub port: Arc<str>,
    /// Input or output port.
    pub side: Side,
    /// Into the node: the request at an input port, the answer back at an output port.
    pub input: Option<Packet>,
    /// Out of the node: the answer at an input port, the packet sent at an output port.
    pub output: Option<Packet>,
    /// When the packet arrived.
    pub started: Instant,
    /// When its answer came back, once it has.
    pub ended: Option<Instant>,
}

impl Frame {
    /// The packet that crossed the port towards where it leads: the request at an input port,
    /// the packet sent at an output port (what `assert`'s `target` checks).
    pub fn crossing(&self) -> Option<&Packet> {
        match self.side {
            Side::In => self.input.as_ref(),
            Side::Out => self.output.as_ref(),
        }
    }

    /// Whether the frame was recorded at port `port` of node `symbol` (its name, else its id).
    pub fn is_at(&self, symbol: &str, port: &str) -> bool {
        *self.symbol == *symbol && same_port(&self.port, port)
    }

    /// How long the answer took, once it came.
    pub fn elapsed(&self) -> Option<Duration> {
        self.ended.map(|end| end.duration_since(self.started))
    }

    /// The frame as the debugger shows it: `process`, `symbol`, `port`, `input`, `output` and
    /// `time`, the last three when known.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new()
            .insert("process", self.process.to_string())
            .insert("symbol", self.symbol.to_string())
            .insert("port", self.port.to_string());
        for (key, packet) in [("input", &self.input), ("output", &self.output)] {
            if let Some(packet) = packet {
                map = map.insert(key, packet.clone().into_value());
            }
        }
        if let Some(elapsed) = self.elapsed() {
            map = map.insert("time", format!("{elapsed:?}"));
        }
        Value::Map(map)
    }
}

/// The frames of one process, shared by the process (for `assert`) and the agent (for the
/// debugger, until it drops them).
#[derive(Debug, Default)]
pub struct Trace {
    frames: Mutex<Vec<Frame>>,
}

impl Trace {
    fn lock(&self) -> MutexGuard<'_, Vec<Frame>> {
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a frame; its index, unless the process has [`MAX_FRAMES`] already.
    fn push(&self, frame: Frame) -> Option<usize> {
        let mut frames = self.lock();
        if frames.len() >= MAX_FRAMES {
            return None;
        }
        frames.push(frame);
        Some(frames.len() - 1)
    }

    fn answer(&self, index: usize, answer: &Packet) {
        if let Some(frame) = self.lock().get_mut(index) {
            match frame.side {
                Side::In => frame.output = Some(answer.clone()),
                Side::Out => frame.input = Some(answer.clone()),
            }
            frame.ended = Some(Instant::now());
        }
    }

    fn get(&self, index: usize) -> Option<Frame> {
        self.lock().get(index).cloned()
    }

    /// Every frame, in the order they were recorded.
    pub fn frames(&self) -> Vec<Frame> {
        self.lock().clone()
    }
}

/// The trace of the process it is kept in.
static TRACE: Local<Option<Arc<Trace>>> = Local::new();

/// The frames recorded for `proc` so far, in order; none when no agent watches its graph.
pub fn frames(proc: &Process) -> Vec<Frame> {
    proc.with_local(&TRACE, |trace| trace.as_ref().map(|t| t.frames()))
        .unwrap_or_default()
}

/// A breakpoint: which frames it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakpoint {
    /// Its number, from 1.
    pub id: u64,
    /// The node (name, else id); any when `None`.
    pub symbol: Option<Arc<str>>,
    /// The port; any when `None`.
    pub port: Option<Arc<str>>,
}

impl Breakpoint {
    fn matches(&self, frame: &Frame) -> bool {
        self.symbol.as_ref().is_none_or(|s| *s == frame.symbol)
            && self.port.as_ref().is_none_or(|p| same_port(p, &frame.port))
    }

    /// The breakpoint as the debugger shows it: `id`, and `symbol` and `port` when set.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new().insert("id", Value::Uint(self.id));
        if let Some(symbol) = &self.symbol {
            map = map.insert("symbol", symbol.to_string());
        }
        if let Some(port) = &self.port {
            map = map.insert("port", port.to_string());
        }
        Value::Map(map)
    }
}

/// Whether two names are one port: `out` is `out[0]`, as everywhere else.
fn same_port(a: &str, b: &str) -> bool {
    a == b || a.strip_suffix("[0]") == Some(b) || b.strip_suffix("[0]") == Some(a)
}

/// What the agent knows of a process.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    /// Its id.
    pub id: Uuid,
    /// `running`, `exited` or `failed: <error>`.
    pub status: String,
    /// How many frames it has.
    pub frames: usize,
}

impl ProcessInfo {
    /// As the debugger shows it: `id`, `status`, `frames`.
    pub fn to_value(&self) -> Value {
        Value::Map(
            Map::new()
                .insert("id", self.id.to_string())
                .insert("status", self.status.clone())
                .insert("frames", Value::Uint(self.frames as u64)),
        )
    }
}

/// A paused packet.
struct Paused {
    trace: Arc<Trace>,
    index: usize,
    breakpoint: u64,
    release: oneshot::Sender<()>,
}

struct Traced {
    trace: Arc<Trace>,
    exited: Option<Option<ErrorValue>>,
}

#[derive(Default)]
struct State {
    processes: HashMap<Uuid, Traced>,
    /// The exited processes still kept, oldest first.
    exited: VecDeque<Uuid>,
    breakpoints: Vec<Breakpoint>,
    next_breakpoint: u64,
    paused: VecDeque<Paused>,
    /// Set once everything was released for good: nothing pauses any more.
    closed: bool,
}

/// Records frames and holds packets at breakpoints: see the module's documentation.
pub struct Agent {
    state: Mutex<State>,
    /// Counts the packets paused so far; a debugger waits on it to show the next one.
    paused: watch::Sender<u64>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent with no breakpoint.
    pub fn new() -> Arc<Agent> {
        Arc::new(Agent {
            state: Mutex::new(State::default()),
            paused: watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The trace of `proc`, kept in the process; made and registered on first use.
    fn trace(self: &Arc<Self>, proc: &Arc<Process>) -> Arc<Trace> {
        let (trace, made) = proc.with_local(&TRACE, |slot| match slot {
            Some(trace) => (Arc::clone(trace), false),
            None => (Arc::clone(slot.insert(Arc::default())), true),
        });
        if made {
            let id = proc.id();
            self.lock().processes.insert(
                id,
                Traced {
                    trace: Arc::clone(&trace),
                    exited: None,
                },
            );
            let agent: Weak<Agent> = Arc::downgrade(self);
            // Outside the process's lock: `on_exit` takes it, and may run the hook at once.
            proc.on_exit(move |error| {
                if let Some(agent) = agent.upgrade() {
                    agent.exited(id, error.cloned());
                }
            });
        }
        trace
    }

    fn exited(&self, id: Uuid, error: Option<ErrorValue>) {
        let mut state = self.lock();
        if let Some(traced) = state.processes.get_mut(&id) {
            traced.exited = Some(error);
            state.exited.push_back(id);
        }
        while state.exited.len() > KEEP_EXITED {
            if let Some(oldest) = state.exited.pop_front() {
                state.processes.remove(&oldest);
            }
        }
    }

    /// Records the frame of `packet` crossing `at` for the process of `cx`, holds it while a
    /// breakpoint says so, then lets `next` carry it on and records the answer.
    fn observe<'a>(
        self: &'a Arc<Self>,
        cx: Cx<'a>,
        at: &'a At,
        packet: Packet,
        next: impl FnOnce(Packet) -> Flow<'a> + Send + 'a,
    ) -> Flow<'a> {
        let proc = cx.proc();
        let trace = self.trace(proc);
        let (input, output) = match at.side {
            Side::In => (Some(packet.clone()), None),
            Side::Out => (None, Some(packet.clone())),
        };
        let Some(index) = trace.push(Frame {
            process: proc.id(),
            symbol: Arc::clone(&at.symbol),
            port: Arc::clone(&at.port),
            side: at.side,
            input,
            output,
            started: Instant::now(),
            ended: None,
        }) else {
            return next(packet);
        };
        let hold = self.hold(&trace, index);
        let finish = move |answer: Packet| {
            trace.answer(index, &answer);
            answer
        };
        match hold {
            None => next(packet).map(finish),
            Some(released) => Flow::pending(async move {
                // A sender dropped without sending (the agent released everything) lets the
                // packet go too.
                let _ = released.await;
                finish(next(packet).await)
            }),
        }
    }

    /// Pauses frame `index` of `trace` when a breakpoint matches it: the receiver resolves
    /// when it is released.
    fn hold(&self, trace: &Arc<Trace>, index: usize) -> Option<oneshot::Receiver<()>> {
        let mut state = self.lock();
        if state.closed || state.breakpoints.is_empty() {
            return None;
        }
        let frame = trace.get(index)?;
        let breakpoint = state.breakpoints.iter().find(|b| b.matches(&frame))?.id;
        let (release, released) = oneshot::channel();
        state.paused.push_back(Paused {
            trace: Arc::clone(trace),
            index,
            breakpoint,
            release,
        });
        drop(state);
        self.paused.send_modify(|n| *n += 1);
        Some(released)
    }

    /// Adds a breakpoint on `symbol`'s `port`; `None` leaves that open.
    pub fn add_breakpoint(&self, symbol: Option<Arc<str>>, port: Option<Arc<str>>) -> Breakpoint {
        let mut state = self.lock();
        state.next_breakpoint += 1;
        let breakpoint = Breakpoint {
            id: state.next_breakpoint,
            symbol,
            port,
        };
        state.breakpoints.push(breakpoint.clone());
        breakpoint
    }

    /// Removes breakpoint `id`; whether it was there. Packets it holds stay paused until
    /// released.
    pub fn remove_breakpoint(&self, id: u64) -> bool {
        let mut state = self.lock();
        let before = state.breakpoints.len();
        state.breakpoints.retain(|b| b.id != id);
        state.breakpoints.len() != before
    }

    /// The breakpoints, in the order they were set.
    pub fn breakpoints(&self) -> Vec<Breakpoint> {
        self.lock().breakpoints.clone()
    }

    /// The current paused packet's frame and the breakpoint that holds it. Packets whose
    /// request was dropped while paused (a client that went away) are skipped.
    pub fn current(&self) -> Option<(Frame, u64)> {
        let mut state = self.lock();
        while let Some(first) = state.paused.front() {
            if first.release.is_closed() {
                state.paused.pop_front();
                continue;
            }
            return Some((first.trace.get(first.index)?, first.breakpoint));
        }
        None
    }

    /// Releases the current paused packet; whether there was one.
    pub fn resume(&self) -> bool {
        let mut state = self.lock();
        while let Some(first) = state.paused.pop_front() {
            if first.release.send(()).is_ok() {
                return true;
            }
        }
        false
    }

    /// Releases every paused packet and pauses none from now on: what quitting the debugger
    /// does, so a server that stops finishes its requests.
    pub fn release_all(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.breakpoints.clear();
        for paused in state.paused.drain(..) {
            let _ = paused.release.send(());
        }
    }

    /// Resolves each time a packet pauses (see [`watch::Receiver::changed`]).
    pub fn pauses(&self) -> watch::Receiver<u64> {
        self.paused.subscribe()
    }

    /// The processes with frames: running ones and the last exited, oldest first.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let state = self.lock();
        let mut all: Vec<ProcessInfo> = state
            .processes
            .iter()
            .map(|(id, traced)| info(*id, traced))
            .collect();
        // Ids are UUID v7: their order is their start's.
        all.sort_by_key(|p| p.id);
        all
    }

    /// What the agent knows of process `id`.
    pub fn process(&self, id: Uuid) -> Option<ProcessInfo> {
        self.lock().processes.get(&id).map(|t| info(id, t))
    }

    /// The frames of process `id`, if it is kept.
    pub fn frames(&self, id: Uuid) -> Option<Vec<Frame>> {
        let trace = Arc::clone(&self.lock().processes.get(&id)?.trace);
        Some(trace.frames())
    }
}

fn info(id: Uuid, traced: &Traced) -> ProcessInfo {
    ProcessInfo {
        id,
        status: match &traced.exited {
            None => "running".to_owned(),
            Some(None) => "exited".to_owned(),
            Some(Some(error)) => format!("failed: {}", error.message()),
        },
        frames: traced.trace.lock().len(),
    }
}

/// Where a tap sits.
#[derive(Debug)]
struct At {
    symbol: Arc<str>,
    port: Arc<str>,
    side: Side,
}

/// A tap on a link (see the module's documentation): records its frame, then writes what it
/// got to its one output, which leads where the link led.
pub(crate) struct Tap {
    agent: Arc<Agent>,
    at: At,
    /// The nodes its output leads to, with their input ports: a source asks them, through the
    /// tap, whether they read a request's body.
    next: Vec<(Arc<dyn Node>, InPort)>,
}

impl Tap {
    /// A tap for the output port `port` of `symbol`, or (`side` `In`) for its input port,
    /// leading to `next`.
    pub(crate) fn new(
        agent: &Arc<Agent>,
        symbol: &str,
        port: &str,
        side: Side,
        next: Vec<(Arc<dyn Node>, InPort)>,
    ) -> Tap {
        Tap {
            agent: Arc::clone(agent),
            at: At {
                symbol: Arc::from(symbol),
                port: Arc::from(port),
                side,
            },
            next,
        }
    }
}

impl Node for Tap {
    fn in_port(&self, _name: &str) -> Option<InPort> {
        Some(InPort(0))
    }

    fn out_port(&self, _name: &str) -> Option<OutPort> {
        None
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        self.agent
            .observe(cx, &self.at, packet, move |packet| cx.relay(packet))
    }

    fn reads_body(&self, _port: InPort, method: &str, path: &str) -> bool {
        self.next
            .iter()
            .any(|(node, port)| node.reads_body(*port, method, path))
    }

    fn relays_answers(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_is_out_0() {
        assert!(same_port("out", "out[0]"));
        assert!(same_port("out[0]", "out"));
        assert!(!same_port("out", "out[1]"));
    }

    #[tokio::test]
    async fn exited_processes_beyond_the_kept_ones_are_dropped() {
        let agent = Agent::new();
        for _ in 0..KEEP_EXITED + 10 {
            let proc = Process::new();
            agent.trace(&proc);
            proc.exit(None);
        }
        let live = Process::new();
        agent.trace(&live);
        let processes = agent.processes();
        assert_eq!(processes.len(), KEEP_EXITED + 1);
        assert_eq!(
            processes.iter().filter(|p| p.status == "running").count(),
            1
        );
    }
}
