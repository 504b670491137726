//! `session`: values kept per live process, and broadcasts to all of them.
//!
//! A packet on `io` stores its payload as the session value of its process (replacing an
//! earlier one) and is answered `None`; the session ends when that process exits. A packet on
//! `in` is broadcast to every live session, as upstream documents (upstream emitted nothing):
//! for each, in the order the sessions started, a child of the session's process gets
//! `[session value, payload]` on `out`, waits for its own children and exits when its answer
//! arrives. The broadcasts run concurrently; their answers merge in session order into the
//! answer of `in` (`None` when there is no session).

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures_util::future::join_all;
use serde::Deserialize;
use uniflow_core::{
    CompileCx, Cx, Flow, InPort, Node, NodeSpec, OutPort, Packet, Process, merge, port,
};
use uniflow_spec::Diagnostic;
use uniflow_value::Value;

/// The kind name.
pub const KIND: &str = "session";

/// The fields of a `session` spec: none.
#[derive(Debug, Deserialize)]
pub struct SessionSpec {}

impl NodeSpec for SessionSpec {
    const KIND: &'static str = KIND;

    fn compile(self, _cx: &CompileCx<'_>) -> Result<Box<dyn Node>, Vec<Diagnostic>> {
        Ok(Box::new(SessionNode {
            sessions: Arc::new(Mutex::new(Vec::new())),
        }))
    }
}

const IO: InPort = InPort(0);
const IN: InPort = InPort(1);
const OUT: OutPort = OutPort(0);

/// A live session: its process and value.
struct Session {
    proc: Weak<Process>,
    value: Value,
}

/// The compiled `session`.
pub struct SessionNode {
    /// Shared with the exit hooks that end sessions; the hooks hold it weakly, so a process
    /// outliving the graph does not keep the node's state alive.
    sessions: Arc<Mutex<Vec<Session>>>,
}

fn lock(sessions: &Mutex<Vec<Session>>) -> MutexGuard<'_, Vec<Session>> {
    // A panic elsewhere must not end every session.
    sessions.lock().unwrap_or_else(|e| e.into_inner())
}

impl SessionNode {
    fn store(&self, proc: &Arc<Process>, value: Value) {
        let mut sessions = lock(&self.sessions);
        if let Some(session) = sessions
            .iter_mut()
            .find(|s| std::ptr::eq(s.proc.as_ptr(), Arc::as_ptr(proc)))
        {
            session.value = value;
            return;
        }
        sessions.push(Session {
            proc: Arc::downgrade(proc),
            value,
        });
        drop(sessions);
        let weak_sessions = Arc::downgrade(&self.sessions);
        let weak_proc = Arc::downgrade(proc);
        proc.on_exit(move |_| {
            if let Some(sessions) = weak_sessions.upgrade() {
                lock(&sessions).retain(|s| !s.proc.ptr_eq(&weak_proc));
            }
        });
    }

    /// The live sessions, in the order they started.
    fn live(&self) -> Vec<(Arc<Process>, Value)> {
        lock(&self.sessions)
            .iter()
            .filter_map(|s| Some((s.proc.upgrade()?, s.value.clone())))
            .filter(|(proc, _)| !proc.is_exited())
            .collect()
    }
}

impl Node for SessionNode {
    fn in_port(&self, name: &str) -> Option<InPort> {
        match name {
            port::IO => Some(IO),
            port::IN => Some(IN),
            _ => None,
        }
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        (name == port::OUT).then_some(OUT)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(payload) = packet else {
            return Flow::Ready(Packet::None);
        };
        if port == IO {
            self.store(cx.proc(), payload);
            return Flow::Ready(Packet::None);
        }
        let sessions = self.live();
        if sessions.is_empty() {
            return Flow::Ready(Packet::None);
        }
        let broadcasts = sessions.into_iter().map(|(parent, value)| {
            let child = parent.fork();
            let message = Value::from(vec![value, payload.clone()]);
            async move {
                let answer = cx.with_proc(&child).send(OUT, message).await;
                child.join().await;
                child.exit(answer.value().and_then(Value::as_error).cloned());
                answer
            }
        });
        let broadcasts: Vec<_> = broadcasts.collect();
        Flow::pending(async move { merge(join_all(broadcasts).await) })
    }
}
