//! Remote embedding backends: models served by Ollama (`POST /api/embed`) or by
//! OpenAI-compatible servers (vLLM, TEI, Infinity, OpenAI itself: `POST /v1/embeddings`).
//!
//! This crate owns everything between the embedding core and those servers: the wire formats
//! ([`wire`]), one pooled HTTP client per upstream host ([`ClientPool`]), and the routing of
//! each call — power-of-two-choices load balancing over a model's weighted endpoints, retries
//! with exponential backoff and full jitter bounded by the caller's deadline, a circuit breaker
//! per endpoint, background probes, and the splitting of big requests into concurrent chunks.
//! A [`RemoteModel`] is one model's router; it implements the core's `Backend` trait and is the
//! only thing the rest of Citadel sees. It must not know about gRPC, REST or configuration
//! files: the binary turns configuration into [`RemoteSettings`].

#![forbid(unsafe_code)]

mod attempt;
mod balance;
mod breaker;
mod clients;
mod endpoint;
mod metrics;
mod model;
mod probe;
mod retry;
mod settings;
pub mod wire;

pub use clients::ClientPool;
pub use model::RemoteModel;
pub use settings::{BreakerPolicy, EndpointSettings, RemoteSettings, RetryPolicy};
pub use wire::Protocol;
