//! Logs, metrics and traces for every citadel component.
//!
//! This crate owns the process-wide tracing subscriber (JSON lines by default, carrying the
//! current span's fields such as `request_id` and `trace_id`), the OpenTelemetry meter provider
//! whose Prometheus exporter backs `GET /metrics`, and the OTLP trace exporter with W3C
//! context propagation (`trace.rs`). Components record through the `opentelemetry` API
//! (`global::meter`), `tracing` macros and `trace_span!`; they must not reach into this crate's
//! types. It must not decide what is measured, only how it is exported.

#![forbid(unsafe_code)]

mod filter;
pub mod trace;

use std::sync::{Arc, OnceLock};

use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};
use tracing::{Level, Metadata};
use tracing_subscriber::{
    EnvFilter, Layer, filter::filter_fn, fmt, layer::SubscriberExt, util::SubscriberInitExt,
};

use filter::LiveFilter;

pub use trace::{TraceGuard, TraceSettings};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log.level `{0}` is not a valid filter: {1}")]
    Filter(String, String),
    #[error("could not install the log subscriber: {0}")]
    Subscriber(String),
    #[error("could not build the exporter: {0}")]
    Exporter(String),
}

/// Installs the global log subscriber, and the trace exporter when `traces` is given (call it
/// inside a Tokio runtime then). `RUST_LOG`, when set, replaces `level`.
pub fn init_logging(
    json: bool,
    level: &str,
    traces: Option<&TraceSettings>,
) -> Result<TraceGuard, TelemetryError> {
    let fixed = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let directive = fixed.clone().unwrap_or_else(|| level.to_string());
    let Some(settings) = traces else {
        // Traces off: the one global filter, as without tracing support, replaceable on
        // SIGHUP (`filter.rs`: with no span directive, no lock per span or event).
        let filter = LiveFilter::new(logs_filter(&directive)?, &directive);
        remember_reload(fixed, filter.clone());
        return tracing_subscriber::registry()
            .with(filter)
            .with(log_layer(json))
            .try_init()
            .map(|()| TraceGuard::new(None))
            .map_err(|e| TelemetryError::Subscriber(e.to_string()));
    };
    let provider = trace::provider(settings)?;
    // Spans at INFO and above, and warnings and errors as span events; not every log line.
    let wanted = filter_fn(|meta: &Metadata<'_>| match meta.is_span() {
        true => *meta.level() <= Level::INFO,
        false => *meta.level() <= Level::WARN,
    });
    // What each span records is kept to its name, fields and times: busy/idle tracking reads
    // the clock at every poll, and code locations and thread names add attributes to every
    // span. Context activation is off: it attaches an OpenTelemetry context to the thread at
    // every poll of every instrumented future (the top cost in a profile of the traced
    // benchmark), and nothing here reads that thread context: parents come from the
    // `tracing` span tree, and `trace::inject` reads the current span's own context.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(trace::tracer(&provider))
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_location(false)
        .with_threads(false)
        .with_filter(wanted);
    let filter = LiveFilter::new(logs_filter(&directive)?, &directive);
    remember_reload(fixed, filter.clone());
    tracing_subscriber::registry()
        .with(log_layer(json).with_filter(filter))
        .with(spans)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    Ok(TraceGuard::new(Some(provider)))
}

/// The log lines' filter for `directive`. The inner steps' spans are for traces only: the
/// log lines keep the request's span. A directive, not a filter function: the filter stays
/// static, so a callsite it turns off costs one check, never a call per event.
fn logs_filter(directive: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(format!("{directive},{}=off", trace::TARGET))
        .map_err(|e| TelemetryError::Filter(directive.to_string(), e.to_string()))
}

/// The installed log filter, and the `RUST_LOG` that pins it, if any.
static RELOAD: OnceLock<(Option<String>, LiveFilter)> = OnceLock::new();

fn remember_reload(fixed: Option<String>, filter: LiveFilter) {
    let _ = RELOAD.set((fixed, filter));
}

/// What a new `log.level` did.
#[derive(Debug, PartialEq, Eq)]
pub enum LevelChange {
    Applied,
    /// `RUST_LOG` is set: it wins over `log.level`, now as at start.
    PinnedByRustLog(String),
}

/// Replaces the log filter with `level` (a `log.level` value) while the process runs.
pub fn set_log_level(level: &str) -> Result<LevelChange, TelemetryError> {
    let Some((fixed, filter)) = RELOAD.get() else {
        return Err(TelemetryError::Subscriber(
            "no log subscriber installed".into(),
        ));
    };
    if let Some(pinned) = fixed {
        return Ok(LevelChange::PinnedByRustLog(pinned.clone()));
    }
    filter.replace(logs_filter(level)?, level);
    Ok(LevelChange::Applied)
}

/// JSON lines (the current span's fields on each) or plain text.
fn log_layer<S>(json: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match json {
        true => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .boxed(),
        false => fmt::layer().with_target(false).boxed(),
    }
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
