//! Traces of requests, in OpenTelemetry's model and W3C's `traceparent`.
//!
//! Off until the binary calls [`enable`] (`[telemetry] otlp_endpoint`): a listener then asks
//! `start` for every request whether it is traced. The decision is taken here, before any
//! span exists, so that a request left out by the sampling ratio costs a random number and a
//! header lookup, not a span that is made and thrown away. A traced request runs inside its
//! span's [`Context`]: the spans the nodes open (the runtime's wrapper) are its children, and
//! `http` and `proxy` send the context upstream (`inject`).
//!
//! The spans go to whatever provider the binary installed in `opentelemetry::global`; this
//! crate uses the API only.

use std::future::Future;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, StatusCode};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{
    SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};

/// The W3C header that carries a trace's context.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// How requests are traced, once enabled.
struct Tracing {
    /// The share of requests without a sampled parent that are traced, in `0.0..=1.0`.
    ratio: f64,
    tracer: global::BoxedTracer,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Traces requests from now on: those that bring a `traceparent` as their caller decided
/// (its sampled flag), others with probability `ratio`. The spans go to the provider and the
/// propagator installed in `opentelemetry::global`, which must be in place before this call.
/// Only the first call has an effect.
pub fn enable(ratio: f64) {
    let tracer = global::tracer_provider().tracer("uniflow");
    let _ = TRACING.set(Tracing {
        ratio: ratio.clamp(0.0, 1.0),
        tracer,
    });
}

/// A traced request: its span, current while the request runs.
pub(crate) struct Traced {
    context: Context,
    /// The request's trace id, for the log lines written while it runs.
    log: tracing::Span,
}

/// Decides whether the request with head `head` is traced, and if so opens its span, a
/// child of the `traceparent` it brings. A request that brings an unsampled `traceparent` is
/// not traced, but that context still goes upstream through `http` and `proxy`.
#[inline]
pub(crate) fn start(head: &http::request::Parts) -> Option<Traced> {
    let tracing = TRACING.get()?;
    start_with(tracing, head)
}

#[inline(never)]
fn start_with(tracing: &Tracing, head: &http::request::Parts) -> Option<Traced> {
    if head.headers.contains_key(TRACEPARENT) {
        let parent =
            global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(&head.headers)));
        let (valid, sampled) = {
            let span = parent.span();
            let context = span.span_context();
            (context.is_valid(), context.is_sampled())
        };
        if valid && sampled {
            return Some(open(tracing, head, &parent));
        }
        if valid {
            // Nothing recorded here, but the caller's decision travels on.
            return Some(Traced {
                context: parent,
                log: tracing::Span::none(),
            });
        }
        // A malformed `traceparent` is ignored, as W3C asks: the ratio decides.
    }
    (fastrand::f64() < tracing.ratio).then(|| open(tracing, head, &Context::new()))
}

/// Opens the span of a traced request, a child of `parent`.
fn open(tracing: &Tracing, head: &http::request::Parts, parent: &Context) -> Traced {
    let method = head.method.as_str().to_owned();
    let span = tracing
        .tracer
        .span_builder(method.clone())
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", head.uri.path().to_owned()),
            KeyValue::new("uniflow.node.kind", "listener"),
        ])
        .start_with_context(&tracing.tracer, parent);
    let context = parent.with_span(span);
    let trace_id = context.span().span_context().trace_id().to_string();
    let log = tracing::info_span!("request", trace_id = %trace_id);
    Traced { context, log }
}

impl Traced {
    /// Runs `request` inside the span, and ends the span with the response's status.
    pub(crate) async fn run<B>(
        self,
        request: impl Future<Output = http::Response<B>>,
    ) -> http::Response<B> {
        let Traced { context, log } = self;
        let response =
            tracing::Instrument::instrument(request.with_context(context.clone()), log).await;
        let span = context.span();
        if span.is_recording() {
            let status = response.status();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            if status.is_server_error() {
                span.set_status(Status::error(status_text(status)));
            }
            span.end();
        }
        response
    }
}

fn status_text(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("").to_owned()
}

/// Writes the current trace context (the span of the node that sends) into `headers` as
/// `traceparent`, replacing one the request brought; does nothing outside a trace.
pub(crate) fn inject(headers: &mut HeaderMap) {
    if TRACING.get().is_none() {
        return;
    }
    let context = Context::current();
    if context.span().span_context().is_valid() {
        global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut HeaderInjector(headers));
        });
    }
}
