//! Embedding backends on remote servers: models served by Ollama (`POST /api/embed`) or by
//! OpenAI-compatible servers (vLLM, TEI, Infinity, OpenAI itself: `POST /v1/embeddings`).
//!
//! This crate owns the two wire formats ([`wire`]), the splitting of big requests into
//! concurrent chunks, the probe call (a one-input embed), and the one mapping of the routing
//! core's `RouteError` to the embedding core's `EmbedError`. Choosing an endpoint, retries,
//! breakers and timeouts are `citadel-routing`'s. A [`RemoteModel`] implements the core's
//! `Backend` trait and is the only thing the rest of Citadel sees. It must not know about
//! gRPC, REST or configuration files: the binary turns configuration into [`RemoteSettings`].

#![forbid(unsafe_code)]

mod model;
mod settings;
pub mod wire;

pub use model::RemoteModel;
pub use settings::RemoteSettings;
pub use wire::Protocol;
