//! Assembles the tonic server: services, reflection, limits, per-request spans.

use std::sync::Arc;

use citadel_embeddings::EmbeddingCore;
use citadel_proto::v1::embedding_service_server::EmbeddingServiceServer;
use tonic::transport::{Server, server::Router};
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::EmbeddingApi;

#[derive(Debug, Clone, Copy)]
pub struct GrpcSettings {
    /// Largest message accepted or sent.
    pub max_message_bytes: usize,
}

/// The gRPC router: EmbeddingService, Health, and reflection (v1 and v1alpha, for grpcurl and
/// older clients) listing only the public services.
pub fn router(
    core: Arc<EmbeddingCore>,
    health: HealthServer<impl Health>,
    settings: GrpcSettings,
) -> Result<Router, tonic_reflection::server::Error> {
    let embeddings = EmbeddingServiceServer::new(EmbeddingApi::new(core))
        .max_decoding_message_size(settings.max_message_bytes)
        .max_encoding_message_size(settings.max_message_bytes);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(citadel_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok(Server::builder()
        .trace_fn(request_span)
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(embeddings))
}

/// Every log line of a gRPC call carries the caller's `x-request-id` (the REST edge always
/// sends one) and the method.
fn request_span(request: &http::Request<()>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(citadel_proto::metadata::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("grpc", request_id = %request_id, method = %request.uri().path())
}
