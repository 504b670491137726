//! A span per node a traced request passes, a child of the span current when the node is
//! handed the packet: the request's (a listener opens it) or the node's upstream. A node is
//! wrapped only when requests are traced ([`Options::traced`](crate::Options::traced)); a
//! packet of a request left out by the sampling ratio then costs one look at the current
//! context.

use std::borrow::Cow;

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue, global};
use uniflow_core::{Cx, Flow, InPort, Node, Packet};
use uniflow_spec::Spec;

use crate::observed::{Observed, Observer};

/// What the spans of one node are made of.
pub(crate) struct Spans {
    tracer: global::BoxedTracer,
    /// The span's name: the node's name, else its kind.
    name: Cow<'static, str>,
    attributes: [KeyValue; 3],
}

/// Wraps a node compiled from `spec` of `namespace`.
pub(crate) fn wrap(namespace: &str, spec: &Spec, node: Box<dyn Node>) -> Box<dyn Node> {
    let label = spec.label(0);
    Box::new(Observed {
        node,
        observer: Spans {
            tracer: global::tracer_provider().tracer("uniflow"),
            // Shared strings: each span clones the attributes, and a clone is then a count.
            attributes: [
                KeyValue::new("uniflow.namespace", shared(namespace)),
                KeyValue::new("uniflow.node.name", shared(&label)),
                KeyValue::new("uniflow.node.kind", shared(&spec.kind)),
            ],
            name: Cow::Owned(label),
        },
    })
}

fn shared(text: &str) -> opentelemetry::StringValue {
    opentelemetry::StringValue::from(std::sync::Arc::<str>::from(text))
}

impl Spans {
    #[inline(never)]
    fn traced<'a>(
        &'a self,
        node: &'a dyn Node,
        cx: Cx<'a>,
        port: InPort,
        packet: Packet,
    ) -> Flow<'a> {
        let span = self
            .tracer
            .span_builder(self.name.clone())
            .with_attributes(self.attributes.clone())
            .start(&self.tracer);
        let context = Context::current_with_span(span);
        let flow = {
            // Current while the node runs, so the nodes it writes to open their spans in it.
            let _current = context.clone().attach();
            node.handle(cx, port, packet)
        };
        match flow {
            Flow::Ready(answer) => {
                end(&context, &answer);
                Flow::Ready(answer)
            }
            Flow::Pending(flow) => Flow::pending(async move {
                let answer = flow.with_context(context.clone()).await;
                end(&context, &answer);
                answer
            }),
        }
    }
}

/// Ends the span of `context` with the outcome of `answer`.
fn end(context: &Context, answer: &Packet) {
    let span = context.span();
    if let Some(error) = answer.value().and_then(|v| v.as_error()) {
        span.set_status(Status::error(error.to_string()));
    }
    span.end();
}

impl Observer for Spans {
    fn handle<'a>(
        &'a self,
        node: &'a dyn Node,
        cx: Cx<'a>,
        port: InPort,
        packet: Packet,
    ) -> Flow<'a> {
        if Context::map_current(|c| c.span().span_context().is_sampled()) {
            self.traced(node, cx, port, packet)
        } else {
            node.handle(cx, port, packet)
        }
    }
}
