//! What every handler shares: gRPC clients to the mesh and the edge's settings.

use std::{sync::Arc, time::Duration};

use axum::http::HeaderMap;
use citadel_proto::{
    metadata::REQUEST_ID,
    v1::{
        completion_service_client::CompletionServiceClient,
        embedding_service_client::EmbeddingServiceClient,
        workflow_service_client::WorkflowServiceClient,
    },
};
use tokio::time::Instant;
use tonic::{Status, metadata::MetadataValue};
use tonic_health::pb::health_client::HealthClient;

use crate::{MeshChannel, error::ApiError};

/// Renders `/metrics`; supplied by the binary so the edge needs no exporter of its own.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Extra time the edge waits past the gRPC deadline for the mesh's own DEADLINE_EXCEEDED.
const DEADLINE_GRACE: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct AppState {
    pub(crate) embeddings: EmbeddingServiceClient<MeshChannel>,
    pub(crate) workflows: WorkflowServiceClient<MeshChannel>,
    pub(crate) completions: CompletionServiceClient<MeshChannel>,
    pub(crate) health: HealthClient<MeshChannel>,
    pub(crate) metrics: MetricsRender,
    pub(crate) request_timeout: Duration,
    /// A completion's deadline (`llm.request_timeout_ms`), streamed or not.
    pub(crate) completion_timeout: Duration,
    pub(crate) started: Instant,
    /// Where the gRPC calls go, for error messages and /health/detailed.
    pub(crate) upstream: Arc<str>,
}

impl AppState {
    pub fn new(
        channel: MeshChannel,
        upstream: &str,
        max_message_bytes: usize,
        request_timeout: Duration,
        completion_timeout: Duration,
        metrics: MetricsRender,
    ) -> Self {
        let embeddings = EmbeddingServiceClient::new(channel.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let workflows = WorkflowServiceClient::new(channel.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let completions = CompletionServiceClient::new(channel.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        AppState {
            embeddings,
            workflows,
            completions,
            completion_timeout,
            health: HealthClient::new(channel),
            metrics,
            request_timeout,
            started: Instant::now(),
            upstream: upstream.into(),
        }
    }

    /// Wraps `message` for the mesh: the request id travels as metadata, and the edge's
    /// deadline as `grpc-timeout`.
    pub(crate) fn request<T>(&self, message: T, headers: &HeaderMap) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let id = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok());
        if let Some(id) = id.and_then(|id| MetadataValue::try_from(id).ok()) {
            request.metadata_mut().insert(REQUEST_ID, id);
        }
        request.set_timeout(self.request_timeout);
        request
    }

    /// `request` for a completion: its own, longer deadline.
    pub(crate) fn llm_request<T>(&self, message: T, headers: &HeaderMap) -> tonic::Request<T> {
        let mut request = self.request(message, headers);
        request.set_timeout(self.completion_timeout);
        request
    }

    /// Awaits a completion call (for a stream: until its first chunk), bounded by the
    /// completion deadline even if the mesh never answers.
    pub(crate) async fn call_llm<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, ApiError> {
        let limit = self.completion_timeout + DEADLINE_GRACE;
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(ApiError::from(self.explain(status, "completion service"))),
            Err(_) => Err(ApiError::from(Status::deadline_exceeded(format!(
                "no answer from the completion service within {}ms",
                self.completion_timeout.as_millis()
            )))),
        }
    }

    /// Awaits a gRPC call, bounded by the edge's deadline even if the mesh never answers.
    pub(crate) async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, ApiError> {
        self.call_mapped(call, "embedding service", ApiError::from)
            .await
    }

    /// Like `call`, for `service`, whose routes read some statuses their own way (`map`).
    pub(crate) async fn call_mapped<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
        service: &str,
        map: fn(Status) -> ApiError,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.request_timeout + DEADLINE_GRACE, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(map(self.explain(status, service))),
            Err(_) => Err(map(Status::deadline_exceeded(format!(
                "no answer from the {service} within {}ms",
                self.request_timeout.as_millis()
            )))),
        }
    }

    /// A transport failure says which upstream could not be reached.
    fn explain(&self, status: Status, service: &str) -> Status {
        let unreachable = status.code() == tonic::Code::Unavailable
            && std::error::Error::source(&status).is_some();
        if unreachable {
            let message = format!(
                "the {service} at {} is unreachable: {}",
                self.upstream,
                status.message()
            );
            return Status::unavailable(message);
        }
        status
    }
}
