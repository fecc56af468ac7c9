//! Assembles the gRPC service stack: services, reflection, message limits, wire hygiene and a
//! span per call. The binary serves it through `citadel-conn`, with the connection limits every
//! listener shares.

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use citadel_embeddings::EmbeddingCore;
use citadel_llm::LlmCore;
use citadel_proto::v1::{
    completion_service_server::CompletionServiceServer,
    embedding_service_server::EmbeddingServiceServer, vector_service_server::VectorServiceServer,
    workflow_service_server::WorkflowServiceServer,
};
use http::{Request, Response};
use http_body::Body;
use tonic::service::Routes;
use tonic_health::pb::health_server::{Health, HealthServer};
use tower::{Service, ServiceBuilder};
use tower_http::{
    classify::{GrpcCode, GrpcErrorsAsFailures, SharedClassifier},
    trace::{DefaultOnFailure, DefaultOnResponse, MakeSpan, TraceLayer},
};
use tracing::Level;

use crate::{
    CompletionApi, EmbeddingApi, VectorApi, WorkflowApi,
    hygiene::{Hygiene, UnaryMethods},
};

#[derive(Debug, Clone, Copy)]
pub struct GrpcSettings {
    /// Largest message accepted or sent.
    pub max_message_bytes: usize,
    /// How long a unary call's request message may take to arrive.
    pub request_body_timeout: std::time::Duration,
}

/// The cores the mesh serves, one per service.
#[derive(Clone)]
pub struct Cores {
    pub embeddings: Arc<EmbeddingCore>,
    pub workflows: WorkflowApi,
    pub llm: Arc<LlmCore>,
    pub vectors: Arc<citadel_vectors::Vectors>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot read the services' descriptors: {0}")]
    Descriptors(#[from] prost::DecodeError),
}

/// The gRPC services as one tower service: EmbeddingService, WorkflowService,
/// CompletionService, VectorService, Health, and
/// reflection (v1 and v1alpha, for grpcurl and older clients) listing only the public
/// services, behind the wire hygiene layer and a span per call.
/// Generic over the request body: hyper's for the listener, tonic's for the edge's in-process
/// calls (the same stack, so both get the same contract, codes and layers).
pub fn service<B>(
    cores: Cores,
    health: HealthServer<impl Health>,
    policy: Arc<citadel_auth::Policy>,
    settings: GrpcSettings,
) -> Result<
    impl Service<
        Request<B>,
        Response = Response<
            impl Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static,
        >,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
    ServerError,
>
where
    B: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static,
{
    let Cores {
        embeddings,
        workflows,
        llm,
        vectors,
    } = cores;
    let embeddings = EmbeddingServiceServer::new(EmbeddingApi::new(embeddings))
        .max_decoding_message_size(settings.max_message_bytes)
        .max_encoding_message_size(settings.max_message_bytes);
    let workflows = WorkflowServiceServer::new(workflows)
        .max_decoding_message_size(settings.max_message_bytes)
        .max_encoding_message_size(settings.max_message_bytes);
    let completions = CompletionServiceServer::new(CompletionApi::new(llm))
        .max_decoding_message_size(settings.max_message_bytes)
        .max_encoding_message_size(settings.max_message_bytes);
    let vectors = VectorServiceServer::new(VectorApi::new(vectors))
        .max_decoding_message_size(settings.max_message_bytes)
        .max_encoding_message_size(settings.max_message_bytes);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(citadel_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let unary = UnaryMethods::from_descriptor_sets(&[
        citadel_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ])?;
    let routes = Routes::new(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(embeddings)
        .add_service(workflows)
        .add_service(completions)
        .add_service(vectors)
        .prepare();
    // The pipeline, outermost first. No tonic `Server`: its timeout layer answers an expired
    // `grpc-timeout` with CANCELLED, where the handlers' own deadline answers
    // DEADLINE_EXCEEDED (deadline.rs).
    Ok(ServiceBuilder::new()
        // A span per call, carrying the caller's request id.
        .layer(trace_layer())
        // Content type, one message per unary call (and its deadline), bounded statuses.
        .layer(Hygiene::layer(unary, settings.request_body_timeout))
        // Who is calling, what the method needs, the caller's limits (auth.rs).
        .layer(crate::AuthorizeLayer::new(policy))
        .service(routes))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every log line of a gRPC call carries the caller's `x-request-id` (the REST edge always
/// sends one) and the method.
#[derive(Clone, Copy)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> tracing::Span {
        // Direct gRPC callers are not sanitised by the REST edge: a long or binary id is not
        // logged.
        let header = request.headers().get(citadel_proto::metadata::REQUEST_ID);
        let request_id = header
            .filter(|v| citadel_proto::metadata::acceptable_request_id(v.as_bytes()))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let span = tracing::info_span!("grpc", request_id = %request_id,
            method = %request.uri().path(), trace_id = tracing::field::Empty);
        // The caller's W3C trace (the REST edge's, or a direct gRPC caller's).
        citadel_telemetry::trace::adopt_parent(&span, request.headers());
        span
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
        .with_success(GrpcCode::Cancelled)
        .with_success(GrpcCode::Unauthenticated)
        .with_success(GrpcCode::PermissionDenied);
    TraceLayer::new(SharedClassifier::new(classifier))
        .make_span_with(RequestSpan)
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::INFO))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(DefaultOnFailure::new().level(Level::WARN))
}
