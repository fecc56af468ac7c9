//! Traces: OpenTelemetry spans exported over OTLP/gRPC when `[telemetry] otlp_endpoint` is set,
//! W3C trace context (`traceparent`, `tracestate`) taken from callers and handed on to the mesh
//! and to upstream servers.
//!
//! The spans are `tracing` spans. The edges' request spans (`http`, `grpc`) are the ones the
//! logs already carry; the inner steps (the embedding core, the cache's Redis round trips, an
//! upstream attempt, a workflow database write) open spans under `TARGET`, which only the
//! OpenTelemetry layer sees: the log lines keep the request span's fields, and with tracing
//! off no layer wants those spans, so creating one costs a callsite check and nothing more.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use opentelemetry::{
    global,
    propagation::{Extractor, Injector},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::TelemetryError;

/// The target of the inner spans: exported as traces, never written to the logs.
pub const TARGET: &str = "citadel::trace";

/// A span of an inner step, seen only by the trace exporter (`TARGET`).
#[macro_export]
macro_rules! trace_span {
    ($name:expr $(, $($fields:tt)*)?) => {
        ::tracing::info_span!(target: "citadel::trace", $name $(, $($fields)*)?)
    };
}

/// Where and how traces are exported.
#[derive(Debug, Clone)]
pub struct TraceSettings {
    /// OTLP/gRPC collector, e.g. `http://collector:4317`.
    pub endpoint: String,
    /// Share of new traces kept (0.0 to 1.0); a caller's sampled flag is followed.
    pub sample_ratio: f64,
    pub service_name: String,
    /// Longest a finished span waits before it is sent.
    pub export_delay: Duration,
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: context is only read and written when they are.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Builds the exporter (inside a Tokio runtime: its gRPC channel lives there) and returns the
/// provider; `init_logging` puts its layer in the subscriber.
pub(crate) fn provider(settings: &TraceSettings) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(settings.endpoint.clone())
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| TelemetryError::Exporter(format!("telemetry.otlp_endpoint: {e}")))?;
    let batches = BatchConfigBuilder::default()
        .with_scheduled_delay(settings.export_delay)
        .with_max_queue_size(8192)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batches)
        .build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio)));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Relaxed);
    Ok(provider)
}

pub(crate) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::SdkTracer {
    provider.tracer("citadel")
}

/// Flushes and stops the exporter; spans of the last moments are sent, within a bound.
pub struct TraceGuard {
    provider: Option<SdkTracerProvider>,
}

impl TraceGuard {
    pub(crate) fn new(provider: Option<SdkTracerProvider>) -> Self {
        TraceGuard { provider }
    }

    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "could not flush the last spans");
        }
    }
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Makes the caller's trace (W3C headers) `span`'s parent, and records the trace id in the
/// span's `trace_id` field, so the log lines written under it name the trace. Nothing
/// happens with tracing off.
pub fn adopt_parent(span: &Span, headers: &http::HeaderMap) {
    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }
    adopt(span, &Headers(headers));
}

/// `adopt_parent` for a `traceparent` kept from earlier (`traceparent()`): work done later,
/// elsewhere (a workflow's run in a worker), joins the trace that asked for it.
pub fn adopt_traceparent(span: &Span, traceparent: &str) {
    struct One<'a>(&'a str);
    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    adopt(span, &One(traceparent));
}

fn adopt(span: &Span, carrier: &dyn Extractor) {
    if !enabled() {
        return;
    }
    let parent = global::get_text_map_propagator(|p| p.extract(carrier));
    if parent.span().span_context().is_valid() {
        // Only fails for a span no layer records; then there is nothing to link.
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
}

/// The current span's `traceparent`, to be kept with work that runs later; `None` with
/// tracing off or outside a traced span.
pub fn traceparent() -> Option<String> {
    let mut found = None;
    inject(|key, value| {
        if key == "traceparent" {
            found = Some(value);
        }
    });
    found
}

/// Hands the current span's trace on: `set` is called with each header (`traceparent`,
/// `tracestate`). Nothing happens with tracing off.
pub fn inject(mut set: impl FnMut(&str, String)) {
    if !enabled() {
        return;
    }
    struct Setter<'a, F>(&'a mut F);
    impl<F: FnMut(&str, String)> Injector for Setter<'_, F> {
        fn set(&mut self, key: &str, value: String) {
            (self.0)(key, value)
        }
    }
    let context = Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut Setter(&mut set)));
}

/// `inject` into an `http::HeaderMap` (upstream calls, gRPC metadata).
pub fn inject_headers(headers: &mut http::HeaderMap) {
    inject(|key, value| {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    });
}
