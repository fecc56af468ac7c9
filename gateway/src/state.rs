//! What every handler shares: gRPC clients to the mesh and the edge's settings.

use std::{sync::Arc, time::Duration};

use citadel_auth::Policy;
use citadel_proto::v1::{
    completion_service_client::CompletionServiceClient,
    embedding_service_client::EmbeddingServiceClient, vector_service_client::VectorServiceClient,
    workflow_service_client::WorkflowServiceClient,
};
use tokio::time::Instant;
use tonic::Status;
use tonic_health::pb::health_client::HealthClient;

use crate::MeshChannel;

/// Renders `/metrics`; supplied by the binary so the edge needs no exporter of its own.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub(crate) embeddings: EmbeddingServiceClient<MeshChannel>,
    pub(crate) workflows: WorkflowServiceClient<MeshChannel>,
    pub(crate) vectors: VectorServiceClient<MeshChannel>,
    pub(crate) completions: CompletionServiceClient<MeshChannel>,
    pub(crate) health: HealthClient<MeshChannel>,
    pub(crate) metrics: MetricsRender,
    pub(crate) request_timeout: Duration,
    /// A completion's deadline (`llm.request_timeout_ms`), streamed or not.
    pub(crate) completion_timeout: Duration,
    pub(crate) started: Instant,
    /// Where the gRPC calls go, for error messages and /health/detailed.
    pub(crate) upstream: Arc<str>,
    /// The same policy the mesh applies, for the routes no RPC serves.
    pub(crate) policy: Arc<Policy>,
    pub(crate) realtime: Arc<Realtime>,
}

/// The long-lived streams' settings, and the streams themselves.
#[derive(Debug, Clone)]
pub struct Realtime {
    pub ws: crate::realtime::WsSettings,
    pub agui: crate::agui::AguiSettings,
    pub streams: LongStreams,
    /// Workflow watches shared between sockets of one principal.
    pub shares: crate::realtime::WatchShares,
}

/// The edge's long-lived streams (WebSocket sessions, agent runs): counted while open, and
/// stopped first at shutdown, so none holds the REST drain and each says goodbye (1001,
/// RUN_ERROR) before the connections close.
#[derive(Debug, Clone, Default)]
pub struct LongStreams {
    pub(crate) stopping: tokio_util::sync::CancellationToken,
    pub(crate) open: tokio_util::task::TaskTracker,
}

impl LongStreams {
    /// Tells every stream to stop, then waits (at most `grace`) until they have.
    pub async fn close(&self, grace: Duration) {
        self.stopping.cancel();
        self.open.close();
        if tokio::time::timeout(grace, self.open.wait()).await.is_err() {
            tracing::warn!(
                open = self.open.len(),
                "long-lived streams still open at shutdown"
            );
        }
    }
}

/// The edge's deadlines: a request's (`http.request_timeout_ms`) and a completion's, streamed
/// or not (`llm.request_timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub request: Duration,
    pub completion: Duration,
}

impl AppState {
    pub fn new(
        channel: MeshChannel,
        upstream: &str,
        max_message_bytes: usize,
        deadlines: Deadlines,
        metrics: MetricsRender,
        policy: Arc<Policy>,
        realtime: Realtime,
    ) -> Self {
        let Deadlines {
            request: request_timeout,
            completion: completion_timeout,
        } = deadlines;
        let embeddings = EmbeddingServiceClient::new(channel.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let workflows = WorkflowServiceClient::new(channel.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let completions = CompletionServiceClient::new(channel.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let vectors = VectorServiceClient::new(channel.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        AppState {
            vectors,
            embeddings,
            workflows,
            completions,
            completion_timeout,
            health: HealthClient::new(channel),
            metrics,
            request_timeout,
            started: Instant::now(),
            upstream: upstream.into(),
            policy,
            realtime: Arc::new(realtime),
        }
    }

    /// A transport failure says which upstream could not be reached.
    pub(crate) fn explain(&self, status: Status, service: &str) -> Status {
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
