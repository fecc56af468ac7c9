//! Assembles the tonic server: services, reflection, limits, per-request spans.

use std::sync::Arc;

use citadel_embeddings::EmbeddingCore;
use citadel_proto::v1::{
    embedding_service_server::EmbeddingServiceServer,
    workflow_service_server::WorkflowServiceServer,
};
use tonic::transport::{Server, server::Router};
use tonic_health::pb::health_server::{Health, HealthServer};
use tower::layer::util::{Identity, Stack};
use tower_http::{
    classify::{GrpcCode, GrpcErrorsAsFailures, SharedClassifier},
    trace::{DefaultOnFailure, DefaultOnResponse, MakeSpan, TraceLayer},
};
use tracing::Level;

use crate::{EmbeddingApi, WorkflowApi};

/// The assembled server, ready for `serve_with_incoming_shutdown`.
pub type GrpcRouter = Router<Stack<Trace, Identity>>;

#[derive(Debug, Clone, Copy)]
pub struct GrpcSettings {
    /// Largest message accepted or sent.
    pub max_message_bytes: usize,
}

/// The gRPC router: EmbeddingService, WorkflowService, Health, and reflection (v1 and v1alpha, for grpcurl and
/// older clients) listing only the public services.
pub fn router(
    core: Arc<EmbeddingCore>,
    workflows: WorkflowApi,
    health: HealthServer<impl Health>,
    settings: GrpcSettings,
) -> Result<GrpcRouter, tonic_reflection::server::Error> {
    let embeddings = EmbeddingServiceServer::new(EmbeddingApi::new(core))
        .max_decoding_message_size(settings.max_message_bytes)
        .max_encoding_message_size(settings.max_message_bytes);
    let workflows = WorkflowServiceServer::new(workflows)
        .max_decoding_message_size(settings.max_message_bytes)
        .max_encoding_message_size(settings.max_message_bytes);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(citadel_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok(Server::builder()
        .layer(trace_layer())
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(embeddings)
        .add_service(workflows))
}

/// Every log line of a gRPC call carries the caller's `x-request-id` (the REST edge always
/// sends one) and the method.
#[derive(Clone, Copy)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> tracing::Span {
        let header = request.headers().get(citadel_proto::metadata::REQUEST_ID);
        let request_id = header.and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info_span!("grpc", request_id = %request_id, method = %request.uri().path())
    }
}

pub type Trace = TraceLayer<
    SharedClassifier<GrpcErrorsAsFailures>,
    RequestSpan,
    (),
    DefaultOnResponse,
    (),
    (),
    DefaultOnFailure,
>;

/// One INFO line per call. Statuses that answer the caller's request (bad input, unknown
/// model, full queue, deadline) are not server failures, so they are not logged as such.
fn trace_layer() -> Trace {
    let classifier = GrpcErrorsAsFailures::new()
        .with_success(GrpcCode::InvalidArgument)
        .with_success(GrpcCode::NotFound)
        .with_success(GrpcCode::FailedPrecondition)
        .with_success(GrpcCode::AlreadyExists)
        .with_success(GrpcCode::ResourceExhausted)
        .with_success(GrpcCode::DeadlineExceeded)
        .with_success(GrpcCode::Cancelled);
    TraceLayer::new(SharedClassifier::new(classifier))
        .make_span_with(RequestSpan)
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::INFO))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(DefaultOnFailure::new().level(Level::WARN))
}
