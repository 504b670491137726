//! A node seen from outside: an [`Observer`] sees each packet a node is handed and the
//! answer it gives, and the node does the rest as if unwrapped. Metrics ([`metered`]) and
//! traces ([`traced`]) observe nodes this way, each only when it is on, so that a graph
//! nobody observes pays nothing.
//!
//! [`metered`]: crate::metered
//! [`traced`]: crate::traced

use std::future::Future;
use std::pin::Pin;

use uniflow_core::{Cx, Error, Flow, InPort, LoadCx, Needs, Node, OutPort, Packet};

/// What looks at the packets of one node.
pub(crate) trait Observer: Send + Sync + 'static {
    /// Hands `packet` to `node` (its [`Node::handle`]) and sees it through.
    fn handle<'a>(
        &'a self,
        node: &'a dyn Node,
        cx: Cx<'a>,
        port: InPort,
        packet: Packet,
    ) -> Flow<'a>;
}

/// `node`, observed by `observer`.
pub(crate) struct Observed<O> {
    pub(crate) node: Box<dyn Node>,
    pub(crate) observer: O,
}

impl<O: Observer> Node for Observed<O> {
    fn in_port(&self, name: &str) -> Option<InPort> {
        self.node.in_port(name)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        self.node.out_port(name)
    }

    fn handle<'a>(&'a self, cx: Cx<'a>, port: InPort, packet: Packet) -> Flow<'a> {
        self.observer.handle(&*self.node, cx, port, packet)
    }

    fn reads_body(&self, port: InPort, method: &str, path: &str) -> bool {
        self.node.reads_body(port, method, path)
    }

    fn needs(&self) -> Needs {
        self.node.needs()
    }

    fn relays_answers(&self) -> bool {
        self.node.relays_answers()
    }

    fn answers_leave(&self) -> bool {
        self.node.answers_leave()
    }

    fn inner(&self) -> Option<&dyn Node> {
        Some(&*self.node)
    }

    fn adopt(&self, previous: &dyn Node) {
        self.node.adopt(previous.inner().unwrap_or(previous));
    }

    fn load(&self, cx: LoadCx) -> Result<(), Error> {
        self.node.load(cx)
    }

    fn moved(&self, cx: LoadCx) {
        self.node.moved(cx);
    }

    fn unload(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.node.unload()
    }
}
