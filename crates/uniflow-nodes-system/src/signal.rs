//! `signal`: writes each change of one kind of resource in the runtime's namespace to `out`,
//! as `{op, id, namespace, name}`, each in a process of its own, from the moment it loads.
//!
//! `op` is `store`, `swap` or `delete`, as upstream names them. A change that may have been
//! missed (the store's watch fell behind, or lost its connection beyond its change log) is
//! written as `{op: resync}`: read everything again. With a `session` and a `gateway` the
//! changes stream to WebSocket clients (`docs/nodes/signal.md`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use serde::Deserialize;
use tokio::task::JoinHandle;
use uniflow_core::{
    CompileCx, Cx, Error, Flow, InPort, LoadCx, Node, OutPort, Packet, Place, Process, Registry,
    shape,
};
use uniflow_spec::ResourceKind;
use uniflow_store::Change;
use uniflow_value::{Map, Value};

use crate::System;

/// The fields of a `signal` spec.
#[derive(Debug, Deserialize)]
pub struct SignalSpec {
    /// `specs` (or `nodes`), `secrets` (or `values`), or `charts`.
    pub topic: String,
}

/// Adds `signal`.
pub(crate) fn register(registry: &mut Registry, system: &System) {
    let system = system.clone();
    registry.add_with("signal", move |spec: SignalSpec, cx: &CompileCx<'_>| {
        let topic = match spec.topic.as_str() {
            "specs" | "nodes" => ResourceKind::Specs,
            "secrets" | "values" => ResourceKind::Secrets,
            "charts" => ResourceKind::Charts,
            other => {
                return Err(vec![cx.error(
                    "topic",
                    format!("unknown topic `{other}`: expected specs (or nodes), secrets (or values) or charts"),
                )]);
            }
        };
        Ok(Box::new(SignalNode {
            topic,
            system: system.clone(),
            place: Place::default(),
            task: Mutex::new(None),
        }) as Box<dyn Node>)
    });
}

/// The compiled `signal`.
pub struct SignalNode {
    topic: ResourceKind,
    system: System,
    /// Where its writes start: set at load, and by a reload that keeps it.
    place: Place,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Node for SignalNode {
    fn in_port(&self, _name: &str) -> Option<InPort> {
        None
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        (name == uniflow_core::port::OUT).then_some(shape::OUT)
    }

    fn handle<'a>(&'a self, _cx: Cx<'a>, _port: InPort, _packet: Packet) -> Flow<'a> {
        Flow::Ready(Packet::None)
    }

    fn load(&self, cx: LoadCx) -> Result<(), Error> {
        self.place.set(cx);
        let (store, namespace, topic) = (
            self.system.store.clone(),
            self.system.namespace.clone(),
            self.topic,
        );
        let place = self.place.clone();
        let task = tokio::spawn(async move {
            let mut changes = match store.watch(Some(&namespace)).await {
                Ok(changes) => changes,
                Err(e) => {
                    tracing::error!(error = %e, "signal: cannot watch the store; no changes are signalled");
                    return;
                }
            };
            while let Some(change) = changes.next().await {
                let event = match change {
                    Change::Event(e) if e.kind == topic => {
                        let mut map = Map::from([
                            ("op", Value::from(e.op.as_str())),
                            ("id", Value::from(e.id)),
                            ("namespace", Value::from(e.namespace)),
                        ]);
                        if let Some(name) = e.name {
                            map = map.with("name", name);
                        }
                        Value::Map(map)
                    }
                    Change::Event(_) => continue,
                    Change::Resync => Value::Map(Map::from([("op", Value::from("resync"))])),
                };
                let Some(place) = place.get() else {
                    return;
                };
                let proc = Process::new();
                let answer = place.run(&proc, |cx| cx.send(shape::OUT, event)).await;
                let error = answer.value().and_then(|v| v.as_error()).cloned();
                if let Some(e) = &error {
                    tracing::warn!(error = %e, "signal: the flow of a change failed");
                }
                // The next change waits until this one's flow has finished, its exit's work
                // (a commit) included.
                if let Err(e) = proc.exit(error).wait().await {
                    tracing::warn!(error = %e, "signal: finishing the flow of a change failed");
                }
            }
        });
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(())
    }

    fn moved(&self, cx: LoadCx) {
        self.place.set(cx);
    }

    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.place.clear();
        Box::pin(async move {
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
        })
    }
}
