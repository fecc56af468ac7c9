//! One span per HTTP request carrying its `x-request-id`, so every log line written while
//! serving it (here and, through gRPC metadata, in the mesh) can be joined.

use axum::extract::Request;
use citadel_proto::metadata::REQUEST_ID;
use tower_http::{
    classify::{ServerErrorsAsFailures, SharedClassifier},
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
        tracing::info_span!("http", request_id = %id, method = %request.method(), path = %request.uri().path())
    }
}

pub type Layer =
    TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan, (), DefaultOnResponse>;

/// Logs each response at INFO with its status and latency, inside the request's span.
pub fn layer() -> Layer {
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::INFO))
}
