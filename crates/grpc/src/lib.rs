//! The gRPC edge of the mesh: `citadel.v1.EmbeddingService`, `citadel.v1.WorkflowService`,
//! `citadel.v1.CompletionService`, `citadel.v1.VectorService`, `grpc.health.v1.Health` and server reflection, served by
//! tonic over the embedding core, the workflow store and the LLM core.
//!
//! This crate owns the translation between protobuf messages and the core's types, the one
//! mapping from [`citadel_embeddings::EmbedError`], [`citadel_llm::LlmError`],
//! [`citadel_vectors::VectorError`] and [`citadel_workflows::WorkflowError`] to
//! `tonic::Status`, `grpc-timeout` deadlines, health reporting tied to model readiness, the
//! server's message limits and the wire rules tonic leaves open (content type, one message per
//! unary call, bounded status messages). It must hold no embedding
//! or workflow logic: handlers convert, call [`citadel_embeddings::EmbeddingCore`] or
//! [`citadel_workflows::Workflows`], convert back.

#![forbid(unsafe_code)]

mod auth;
mod completion;
mod convert;
mod deadline;
mod embedding;
mod health;
mod hygiene;
mod server;
mod status;
mod vector;
mod workflow;
mod workflow_convert;

pub use auth::{AuthorizeLayer, rate_values};
pub use completion::CompletionApi;
pub use embedding::EmbeddingApi;
pub use health::{HealthControl, worker_health};
pub use server::{Cores, GrpcSettings, ServerError, service};
pub use vector::VectorApi;
pub use workflow::WorkflowApi;
