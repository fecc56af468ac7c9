//! One span per HTTP request carrying its `x-request-id` (and, with traces on, its
//! `trace_id`, a child of the caller's `traceparent`), so every log line written while serving
//! it (here and, through gRPC metadata, in the mesh) can be joined.

use axum::extract::Request;
use citadel_proto::metadata::REQUEST_ID;
use tower_http::{
    classify::{SharedClassifier, StatusInRangeAsFailures},
    trace::{DefaultOnResponse, MakeSpan, TraceLayer},
};
use tracing::{Level, Span};

#[derive(Clone, Copy)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let path = request.uri().path();
        // Paths are bounded at the edge (8 KB), but a log line needs far less.
        let path = path.get(..MAX_LOGGED_PATH).unwrap_or(path);
        let span = tracing::info_span!("http", request_id = %id, method = %request.method(),
            path = %path, trace_id = tracing::field::Empty);
        // The caller's W3C trace, when it sent one and traces are on.
        citadel_telemetry::trace::adopt_parent(&span, request.headers());
        span
    }
}

const MAX_LOGGED_PATH: usize = 256;

pub type Layer =
    TraceLayer<SharedClassifier<StatusInRangeAsFailures>, RequestSpan, (), DefaultOnResponse>;

/// Logs each response at INFO with its status and latency, inside the request's span. Only
/// 500, 501 and 502 (a fault here or an unusable upstream answer) are logged as errors; 503
/// while models load or upstreams are down, 504 and 505 are answers working as designed.
pub fn layer() -> Layer {
    TraceLayer::new(StatusInRangeAsFailures::new(500..=502).into_make_classifier())
        .make_span_with(RequestSpan)
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::INFO))
}
