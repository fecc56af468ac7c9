//! The one error type of the embedding core. Edges match it exhaustively.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EmbedError {
    /// The request is malformed; `param` names the offending request field.
    #[error("{message}")]
    InvalidInput {
        param: &'static str,
        message: String,
    },
    /// No model by that name or alias.
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    /// The model's queue is full; the caller should retry after `retry_after`.
    #[error("model `{model}` is overloaded ({queued} inputs queued); retry after {}s", retry_after.as_secs())]
    Overloaded {
        model: String,
        queued: usize,
        retry_after: Duration,
    },
    /// The model cannot serve right now (loading, failed to load, every upstream failing,
    /// shutting down). `retry_after`: when a retry may succeed, if known.
    #[error("model `{model}` is unavailable: {reason}")]
    Unavailable {
        model: String,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The caller's deadline passed before the vectors were ready.
    #[error("deadline exceeded after {}ms", elapsed.as_millis())]
    DeadlineExceeded { elapsed: Duration },
    /// A fault inside the backend that the caller cannot fix.
    #[error("model `{model}` failed: {message}")]
    Backend { model: String, message: String },
    /// An upstream server answered something unusable (malformed, wrong shape, refused key).
    #[error("model `{model}`: upstream {endpoint} {message}")]
    Upstream {
        model: String,
        endpoint: String,
        message: String,
    },
}

impl EmbedError {
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        EmbedError::InvalidInput {
            param,
            message: message.into(),
        }
    }

    /// A short label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            EmbedError::InvalidInput { .. } => "invalid",
            EmbedError::ModelNotFound(_) => "not_found",
            EmbedError::Overloaded { .. } => "overloaded",
            EmbedError::Unavailable { .. } => "unavailable",
            EmbedError::DeadlineExceeded { .. } => "deadline",
            EmbedError::Backend { .. } => "internal",
            EmbedError::Upstream { .. } => "upstream",
        }
    }
}

/// A caller-supplied value as an error message may quote it: at most 64 characters, so no
/// message grows with the request.
pub(crate) fn quote(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    match value.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_string(),
    }
}
