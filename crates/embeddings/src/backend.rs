//! What a source of vectors must provide.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::EmbedError;

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
}

/// Where a model is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    Loading,
    Ready,
    Failed(String),
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
    pub timing: StageTiming,
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    fn info(&self) -> &ModelInfo;

    /// Current state; the core refuses requests unless it is `Ready`.
    fn state(&self) -> ModelState;

    /// Follows state changes (for health reporting).
    fn watch_state(&self) -> watch::Receiver<ModelState>;

    /// Embeds `inputs` (already validated: non-empty, none empty). Vectors are returned
    /// un-normalised at full dimension; `truncate` says whether over-long inputs are cut or
    /// refused. Dropping the future must abandon the work that has not started.
    async fn embed(&self, inputs: Vec<String>, truncate: bool)
    -> Result<BackendOutput, EmbedError>;

    /// Stops taking work; pending work finishes. Called on shutdown.
    fn close(&self) {}
}
