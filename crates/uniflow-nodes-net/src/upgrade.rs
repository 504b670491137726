//! The hand-over of a request's connection from the listener to a `gateway`.
//!
//! Upstream's gateway took the listener's response writer out of the process. Here the
//! listener puts the request's pending upgrade into the request's process (only for requests
//! that ask for an upgrade, and only when the graph holds a gateway, so other requests pay
//! nothing); a gateway claims it and leaves the handshake response in its place. The listener
//! then sends that response instead of one built from the answer, and hyper hands the
//! connection to the gateway once it is written; or, when the answer is a failure, it sends
//! the failure and ends the request's process, which stops the gateway's wait.

use std::sync::Arc;

use http::Response;
use hyper::upgrade::OnUpgrade;
use uniflow_core::{Local, Process};

use crate::payload::Body;

/// A pending upgrade and, once claimed, the handshake response.
#[derive(Default)]
struct Slot {
    pending: Option<OnUpgrade>,
    response: Option<Response<Body>>,
}

/// Where a process keeps its slot.
static SLOT: Local<Slot> = Local::new();

/// Offers the request's upgrade to the nodes that handle `proc`.
pub(crate) fn offer(proc: &Process, pending: OnUpgrade) {
    proc.with_local(&SLOT, |slot| slot.pending = Some(pending));
}

/// Claims the upgrade offered to `proc` or an ancestor, leaving `response` to be sent in its
/// place. `None` when no upgrade was offered or another node claimed it first.
pub(crate) fn claim(proc: &Arc<Process>, response: Response<Body>) -> Option<OnUpgrade> {
    let mut response = Some(response);
    let mut current = Some(proc);
    while let Some(p) = current {
        let claimed = p.with_local(&SLOT, |slot| {
            let pending = slot.pending.take()?;
            slot.response = response.take();
            Some(pending)
        });
        if claimed.is_some() {
            return claimed;
        }
        current = p.parent();
    }
    None
}

/// The handshake response a gateway left, if one claimed the upgrade.
pub(crate) fn take_response(proc: &Process) -> Option<Response<Body>> {
    proc.with_local(&SLOT, |slot| slot.response.take())
}
