//! The built-in task kinds: `noop` and `sleep` for tests and benchmarks, `embed_batch` and
//! `cache_warm` over `EmbeddingService`, `llm_batch` and `llm_chain` over `CompletionService`,
//! `vector_ingest` over `VectorService`.

mod embed;
mod files;
mod ingest;
pub mod jsonl;
mod llm;
mod noop;
mod sleep;

pub use embed::{CacheWarm, EmbedBatch, EmbedSettings};
pub use files::FileRoot;
pub use ingest::{IngestSettings, VectorIngest};
pub use llm::{LlmBatch, LlmChain, LlmSettings};
pub use noop::Noop;
pub use sleep::Sleep;

use serde_json::Value as Json;
use tonic::{
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// How the task kinds reach the mesh: a channel whose every call carries the worker's
/// credential (`workflows.api_key`), so a mesh with auth required serves them like any caller.
pub type MeshTransport = InterceptedService<Channel, Credentials>;

/// Adds `authorization: Bearer <key>` to every call, when a key is configured, and the
/// running workflow's trace context.
#[derive(Clone, Default)]
pub struct Credentials(Option<AsciiMetadataValue>);

impl Credentials {
    /// `None` or an empty key: calls carry no credential. A key that is not valid header text
    /// is an error naming the setting.
    pub fn new(api_key: Option<&str>) -> Result<Credentials, String> {
        match api_key.map(str::trim).filter(|k| !k.is_empty()) {
            None => Ok(Credentials(None)),
            Some(key) => MetadataValue::try_from(format!("Bearer {key}"))
                .map(|v| Credentials(Some(v)))
                .map_err(|_| {
                    "workflows.api_key holds characters a header cannot carry".to_string()
                }),
        }
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = request.metadata_mut();
        if let Some(value) = &self.0 {
            metadata.insert("authorization", value.clone());
        }
        // The workflow's trace continues in the service it calls (a no-op with traces off).
        citadel_telemetry::trace::inject(|key, value| {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::AsciiMetadataKey::from_bytes(key.as_bytes()),
                AsciiMetadataValue::try_from(value),
            ) {
                metadata.insert(key, value);
            }
        });
        Ok(request)
    }
}

/// `params` must be a JSON object; names the kind otherwise.
pub(crate) fn object<'a>(
    kind: &str,
    params: &'a Json,
) -> Result<&'a serde_json::Map<String, Json>, String> {
    params
        .as_object()
        .ok_or_else(|| format!("params of a {kind} workflow must be a JSON object"))
}

/// A mesh call's failure as a retry decision: what the caller sent (bad input, a missing
/// model or collection, a refused credential) stays wrong on a retry; outages and full queues
/// pass. `what` says which call failed on which part of the work.
pub(crate) fn mesh_error(status: &tonic::Status, what: &str) -> crate::TaskError {
    use tonic::Code;
    let message = format!("{what}: {}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::Unimplemented => crate::TaskError::permanent(message),
        _ => crate::TaskError::retryable(message),
    }
}
