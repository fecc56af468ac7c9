//! In-process sentence-embedding models on ONNX Runtime: the embedded default backend.
//!
//! This crate owns loading a model directory (`model.onnx` built by `make models` from the
//! published safetensors, plus `tokenizer.json`), tokenization exactly as sentence-transformers
//! does it, and the dynamic batcher that merges concurrent requests into length-sorted model runs
//! on dedicated threads. It implements [`citadel_embeddings::Backend`] and nothing else: it must
//! not know about transports, caching or the registry of other models.

#![forbid(unsafe_code)]

mod batcher;
mod metrics;
mod model;
mod runtime;
mod session;
mod tokenize;

pub use model::{OnnxModel, OnnxModelSettings};

/// Why an ONNX model could not be set up. Messages name the cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("model files not found in {dir} (missing {file}): run `make models`")]
    ModelFilesMissing { dir: String, file: String },
    #[error("ONNX Runtime library not found at {0}: run `make models`, or set onnx.library_path")]
    RuntimeMissing(String),
    #[error("could not load ONNX Runtime from {path}: {message}")]
    RuntimeLoad { path: String, message: String },
    #[error("could not load the tokenizer {path}: {message}")]
    Tokenizer { path: String, message: String },
    #[error("could not load the model graph {path}: {message}")]
    Session { path: String, message: String },
    #[error("could not read the model's configuration {path}: {message}")]
    ModelConfig { path: String, message: String },
    #[error(
        "models.{model}.max_input_tokens is {configured}, but the model has only {positions} positions: lower it"
    )]
    TooManyTokens {
        model: String,
        configured: u32,
        positions: u32,
    },
    #[error("could not start the model's worker threads: {0}")]
    Workers(String),
}
