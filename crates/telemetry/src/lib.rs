//! Logs and metrics for every citadel component.
//!
//! This crate owns the process-wide tracing subscriber (JSON lines by default, carrying the
//! current span's fields such as `request_id`) and the OpenTelemetry meter provider whose
//! Prometheus exporter backs `GET /metrics`. Components record through the `opentelemetry` API
//! (`global::meter`) and `tracing` macros only; they must not reach into this crate's types.
//! It must not decide what is measured, only how it is exported.

#![forbid(unsafe_code)]

use std::sync::Arc;

use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log.level `{0}` is not a valid filter: {1}")]
    Filter(String, String),
    #[error("could not install the log subscriber: {0}")]
    Subscriber(String),
    #[error("could not build the Prometheus exporter: {0}")]
    Exporter(String),
}

/// Installs the global log subscriber. `RUST_LOG`, when set, replaces `level`.
pub fn init_logging(json: bool, level: &str) -> Result<(), TelemetryError> {
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let filter = EnvFilter::try_new(&directive)
        .map_err(|e| TelemetryError::Filter(directive.clone(), e.to_string()))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        let layer = fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true);
        registry.with(layer).try_init()
    } else {
        registry.with(fmt::layer().with_target(false)).try_init()
    };
    result.map_err(|e| TelemetryError::Subscriber(e.to_string()))
}

/// Renders the Prometheus text exposition of every metric recorded so far.
#[derive(Clone)]
pub struct MetricsHandle {
    registry: prometheus::Registry,
    // Kept alive: dropping the provider stops collection.
    _provider: Arc<SdkMeterProvider>,
}

impl MetricsHandle {
    /// Creates the Prometheus-backed meter provider and makes it the global one.
    pub fn install() -> Result<Self, TelemetryError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Ok(MetricsHandle {
            registry,
            _provider: Arc::new(provider),
        })
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
