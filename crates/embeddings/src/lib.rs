//! The embedding core: one place that owns what an embedding request means, whatever edge it
//! came through.
//!
//! It owns the model registry (names and aliases), request validation (written once, here),
//! backpressure (a bounded queue per model, refused fast with [`EmbedError::Overloaded`]),
//! deadlines, prompt prefixes, fallback to another model, post-processing (dimension
//! truncation, L2 normalisation), and the use of the embedding cache: keys, partial hits and
//! single flight (the cache's storage lives behind the [`EmbeddingCache`] trait). Backends (the in-process ONNX model, Ollama and
//! OpenAI-compatible servers in `citadel-remote-embeddings`) plug in through the [`Backend`] trait. It must not know about transports: no tonic, no axum, no JSON. The edges
//! map [`EmbedError`] to gRPC status and HTTP errors, each exactly once.

#![forbid(unsafe_code)]

mod backend;
mod cache;
mod core;
mod error;
mod flight;
mod metrics;
mod postprocess;
mod serve;
mod validate;

pub use backend::{
    Backend, BackendOutput, BackendRequest, BreakerState, EndpointView, ModelInfo, ModelState,
    StageTiming,
};
pub use cache::{
    CacheKey, CacheLevelStatus, CacheMode, CachePolicy, CacheStatus, CachedEmbedding,
    EmbeddingCache, FlushProgress, ModelTag, model_tag,
};
pub use core::{EmbedParams, Embedded, EmbeddingCore, Limits, ModelOptions, ModelView};
pub use error::EmbedError;
