//! `VectorError`: what the core tells an edge, mapped to a gRPC status once in `crates/grpc`.

use citadel_embeddings::EmbedError;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    /// The request is malformed; `param` names the offending field.
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    #[error("the collection `{0}` does not exist")]
    NotFound(String),
    #[error("the collection `{0}` already exists")]
    AlreadyExists(String),
    /// Embedding the texts failed; carries the embedding core's own error (an unknown model,
    /// a full queue, a deadline), so callers see what they would from EmbeddingService.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The store cannot be reached now; worth retrying.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl VectorError {
    pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> VectorError {
        VectorError::Invalid {
            param,
            message: message.into(),
        }
    }
}

impl From<StoreError> for VectorError {
    fn from(e: StoreError) -> VectorError {
        match e {
            StoreError::NotFound(name) => VectorError::NotFound(name),
            StoreError::AlreadyExists(name) => VectorError::AlreadyExists(name),
            StoreError::Invalid(m) => VectorError::invalid("points", m),
            StoreError::Unavailable(m) => VectorError::Unavailable(m),
            StoreError::Internal(m) => VectorError::Internal(m),
        }
    }
}
