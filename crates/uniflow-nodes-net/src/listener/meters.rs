//! What a listener counts for the operator endpoint's `/metrics`: requests by status class,
//! requests in flight, open connections.
//!
//! The handles are made when the listener loads. Without an exporter installed (no `--admin`)
//! they are no-ops, so a request pays one branch per count.

use metrics::{Counter, Gauge};

/// A listener's counters.
pub(super) struct Meters {
    /// Requests answered, by the first digit of their status (index 0 for 1xx).
    answered: [Counter; 5],
    in_flight: Gauge,
    connections: Gauge,
}

impl Meters {
    /// The counters of the listener named `listener`.
    pub(super) fn new(listener: &str) -> Meters {
        let class = |class: &'static str| {
            metrics::counter!(
                "uniflow_listener_requests_total",
                "listener" => listener.to_owned(),
                "class" => class
            )
        };
        Meters {
            answered: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(class),
            in_flight: metrics::gauge!("uniflow_listener_requests_in_flight", "listener" => listener.to_owned()),
            connections: metrics::gauge!("uniflow_listener_connections", "listener" => listener.to_owned()),
        }
    }

    /// Counts a response.
    pub(super) fn answered(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.answered[class].increment(1);
    }

    /// A request in flight until the guard drops (answered, or dropped with its client).
    pub(super) fn flight(&self) -> Open<'_> {
        self.in_flight.increment(1.0);
        Open(&self.in_flight)
    }

    /// A connection open until the guard drops.
    pub(super) fn open(&self) -> Open<'_> {
        self.connections.increment(1.0);
        Open(&self.connections)
    }
}

/// Takes one off a gauge when dropped.
pub(super) struct Open<'a>(&'a Gauge);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
