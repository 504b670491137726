//! Node shapes shared by many kinds.
//!
//! [`OneToOne`] turns a [`Transform`] (a function of the payload) into a node with an `in`
//! port and `out`/`error` outputs: a result goes to `out`, a failure to `error`, and whichever
//! port is unlinked sends the packet back as the answer. Most kinds are one of these.

use uniflow_value::{ErrorValue, Value};

use crate::node::{Cx, Flow, InPort, Node, OutPort};
use crate::packet::Packet;
use crate::port;

/// The input port of a one-to-one node.
pub const IN: InPort = InPort(0);
/// The `out` port of a one-to-one node.
pub const OUT: OutPort = OutPort(0);
/// The `error` port of a one-to-one node.
pub const ERROR: OutPort = OutPort(1);

/// Port numbering for nodes with an `error` output and numbered outputs `out[N]` (`out` is
/// `out[0]`): `error` is port 0 and `out[N]` is port `N + 1`, so numbers stay dense and a
/// port "exists" (`Cx::port_exists`) exactly when it or a higher-numbered one is linked, as
/// upstream's lazily created ports did.
pub mod indexed {
    use uniflow_spec::PortName;

    use crate::node::OutPort;
    use crate::port;

    /// The `error` port.
    pub const ERROR: OutPort = OutPort(0);

    /// The port `out[index]`.
    pub const fn out(index: usize) -> OutPort {
        OutPort(index as u32 + 1)
    }

    /// The number of `error`, `out` or `out[N]`; `None` for any other name.
    pub fn out_port(name: &str) -> Option<OutPort> {
        if name == port::ERROR {
            return Some(ERROR);
        }
        PortName::parse(name).index_of(port::OUT, true).map(out)
    }

    /// Like [`out_port`], for a node with the outputs `out[0]` to `out[count - 1]` only (`if`,
    /// `call`, `loop`).
    pub fn out_port_below(name: &str, count: usize) -> Option<OutPort> {
        out_port(name).filter(|p| p.0 as usize <= count)
    }
}

/// A synchronous function of the payload.
pub trait Transform: Send + Sync + 'static {
    /// Computes the output for one input. The process is behind `cx` ([`Cx::proc`]): asking
    /// for it makes a lazy one, so transforms that do not need it do not ask.
    ///
    /// # Errors
    /// A failure, sent to the `error` port.
    fn transform(&self, cx: &Cx<'_>, input: Value) -> Result<Value, ErrorValue>;
}

/// A node with one input, computing one output per packet.
pub struct OneToOne<T>(pub T);

impl<T> OneToOne<T> {
    /// The transform inside.
    pub fn inner(&self) -> &T {
        &self.0
    }
}

/// The input ports of any node shaped `in -> out | error`.
pub fn in_port(name: &str) -> Option<InPort> {
    (name == port::IN).then_some(IN)
}

/// The output ports of any node shaped `in -> out | error`.
pub fn out_port(name: &str) -> Option<OutPort> {
    match name {
        port::OUT => Some(OUT),
        port::ERROR => Some(ERROR),
        _ => None,
    }
}

impl<T: Transform> Node for OneToOne<T> {
    fn in_port(&self, name: &str) -> Option<InPort> {
        in_port(name)
    }

    fn out_port(&self, name: &str) -> Option<OutPort> {
        out_port(name)
    }

    #[inline]
    fn handle<'a>(&'a self, cx: Cx<'a>, _port: InPort, packet: Packet) -> Flow<'a> {
        let Packet::Data(input) = packet else {
            return Flow::Ready(Packet::None);
        };
        match self.0.transform(&cx, input) {
            Ok(output) => cx.send(OUT, output),
            Err(e) => cx.send(ERROR, Value::Error(e)),
        }
    }
}
