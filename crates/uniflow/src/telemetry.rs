//! `[telemetry]`: traces of requests, sent over OTLP/HTTP to a collector.
//!
//! The provider here samples nothing itself: the listeners decide which requests are traced
//! (`uniflow_nodes_net::trace`), before any span exists, and every span they and the nodes
//! then open is recorded. Spans are batched and sent from the SDK's own thread, so a slow or
//! absent collector never holds a request up; what it cannot take is dropped and logged.

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::Deserialize;

/// `[telemetry]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TelemetryConfig {
    /// Where spans go, e.g. `http://127.0.0.1:4318` (`/v1/traces` is added to a URL without a
    /// path) or the full URL of the traces endpoint. Unset: no traces.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The share of requests traced when they bring no sampled `traceparent`, from 0 to 1.
    #[serde(default = "TelemetryConfig::default_ratio")]
    pub sample_ratio: f64,
}

impl TelemetryConfig {
    fn default_ratio() -> f64 {
        1.0
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            sample_ratio: TelemetryConfig::default_ratio(),
        }
    }
}

/// The installed provider; [`Telemetry::shutdown`] sends what is still batched.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Installs the provider and turns tracing on in the listeners, when `config` names an
/// endpoint. Must run before the namespace is built, so its nodes open spans.
///
/// # Errors
/// A ratio outside 0..=1, or an endpoint that is not an `http`/`https` URL.
pub fn install(config: &TelemetryConfig, namespace: &str) -> anyhow::Result<Option<Telemetry>> {
    let Some(endpoint) = config.otlp_endpoint.as_deref().map(str::trim) else {
        return Ok(None);
    };
    let ratio = config.sample_ratio;
    if !(0.0..=1.0).contains(&ratio) {
        anyhow::bail!("telemetry.sample_ratio: {ratio} is not between 0 and 1");
    }
    let endpoint = traces_url(endpoint)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint.clone())
        .build()
        .with_context(|| format!("telemetry.otlp_endpoint: cannot send to `{endpoint}`"))?;
    let mut resource = Resource::builder()
        .with_attribute(KeyValue::new("uniflow.namespace", namespace.to_owned()));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("uniflow");
    }
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    uniflow_nodes_net::trace::enable(ratio);
    tracing::info!(%endpoint, sample_ratio = ratio, "sending traces over OTLP/HTTP");
    Ok(Some(Telemetry { provider }))
}

/// The traces endpoint of `endpoint`: as given when it has a path, else the collector's
/// usual `/v1/traces` under it.
fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let uri: hyper::Uri = endpoint
        .parse()
        .with_context(|| format!("telemetry.otlp_endpoint: `{endpoint}` is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        anyhow::bail!(
            "telemetry.otlp_endpoint: `{endpoint}` is not an http:// or https:// URL with a host"
        );
    }
    Ok(match uri.path() {
        "" | "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        _ => endpoint.to_owned(),
    })
}

impl Telemetry {
    /// Sends the spans still batched, waiting at most a few seconds for the collector.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(std::time::Duration::from_secs(5))
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "could not send the last spans");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn a_bare_endpoint_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/api/traces").unwrap(),
            "https://otel.example/api/traces"
        );
    }

    #[test]
    fn a_malformed_endpoint_is_refused() {
        for bad in ["127.0.0.1:4318", "ftp://host/x", "not a url"] {
            let error = traces_url(bad).unwrap_err().to_string();
            assert!(error.contains("telemetry.otlp_endpoint"), "{bad}: {error}");
        }
    }
}
