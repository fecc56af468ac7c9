//! The gRPC edge of the mesh: `citadel.v1.EmbeddingService`, `grpc.health.v1.Health` and server
//! reflection, served by tonic over the embedding core.
//!
//! This crate owns the translation between protobuf messages and the core's types, the one
//! mapping from [`citadel_embeddings::EmbedError`] to `tonic::Status`, `grpc-timeout` deadlines,
//! health reporting tied to model readiness, and the server's limits. It must hold no embedding
//! logic: handlers convert, call [`citadel_embeddings::EmbeddingCore`], convert back.

#![forbid(unsafe_code)]

mod convert;
mod deadline;
mod embedding;
mod health;
mod server;
mod status;

pub use embedding::EmbeddingApi;
pub use health::HealthControl;
pub use server::{GrpcRouter, GrpcSettings, router};
