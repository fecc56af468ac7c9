//! What a source of vectors must provide.

use std::time::Duration;

use async_trait::async_trait;
use tokio::{sync::watch, time::Instant};

use crate::EmbedError;
pub use citadel_routing::{BreakerState, EndpointView, ModelState};

/// Static facts about a model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub aliases: Vec<String>,
    pub dimensions: u32,
    pub max_input_tokens: u32,
    /// "onnx", "ollama", "openai".
    pub backend: &'static str,
    pub owned_by: String,
    /// What makes this model's vectors what they are (backend, upstream model or graph
    /// digest, revision): part of every cache key, so a changed model never serves old vectors.
    pub identity: String,
}

/// What the core asks of a backend.
#[derive(Debug, Clone)]
pub struct BackendRequest {
    /// Validated (non-empty, none empty), prompt prefix already applied.
    pub inputs: Vec<String>,
    /// Cut over-long inputs (true) or refuse them.
    pub truncate: bool,
    /// When the caller stops waiting; retries must not sleep past it.
    pub deadline: Option<Instant>,
}

/// Time spent in each stage, for the response's timing and for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTiming {
    pub tokenize: Duration,
    /// Wait between being queued and the first model run that carried this request.
    pub queue: Duration,
    /// The longest model run that carried part of this request.
    pub inference: Duration,
}

/// Raw vectors from a backend, one per input, in input order.
#[derive(Debug, Clone, Default)]
pub struct BackendOutput {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens processed, over all inputs.
    pub prompt_tokens: u64,
    /// Tokens of each input, when the backend knows them (empty otherwise: the core then
    /// shares `prompt_tokens` out by input length).
    pub input_tokens: Vec<u32>,
    pub timing: StageTiming,
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    fn info(&self) -> &ModelInfo;

    /// Current state; the core refuses requests unless it is `Ready`.
    fn state(&self) -> ModelState;

    /// Follows state changes (for health reporting).
    fn watch_state(&self) -> watch::Receiver<ModelState>;

    /// Embeds the request's inputs. Vectors are returned at full dimension (normalised or
    /// not, as the backend produces them). Dropping the future must abandon the work that has
    /// not started.
    async fn embed(&self, request: BackendRequest) -> Result<BackendOutput, EmbedError>;

    /// Remote backends: their upstream servers, for health and `ListModels`.
    fn endpoints(&self) -> Vec<EndpointView> {
        Vec::new()
    }

    /// Stops taking work; pending work finishes. Called on shutdown.
    fn close(&self) {}
}
