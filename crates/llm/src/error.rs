//! The one error type of LLM coordination. The gRPC edge maps it to a status in one place.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LlmError {
    /// The request is malformed, or a server refused it as input. `code` is OpenAI's, when it
    /// has one (`context_length_exceeded`).
    #[error("{message}")]
    InvalidInput {
        param: Option<String>,
        message: String,
        code: Option<&'static str>,
    },
    /// No configured server serves this model.
    #[error("{0}")]
    ModelNotFound(String),
    /// Every server that serves the model is full (429).
    #[error("model `{model}` is overloaded: {reason}")]
    Overloaded {
        model: String,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// None of the model's servers (nor its fallbacks') can answer now.
    #[error("model `{model}` is unavailable: {reason}")]
    Unavailable {
        model: String,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The caller's deadline, or the first chunk's, passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A server answered something unusable, before or after the stream began.
    #[error("model `{model}`: upstream {endpoint} {message}")]
    Upstream {
        model: String,
        endpoint: String,
        message: String,
    },
}

impl LlmError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        LlmError::InvalidInput {
            param: Some(param.to_string()),
            message: message.into(),
            code: None,
        }
    }

    /// A short label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            LlmError::InvalidInput { .. } => "invalid",
            LlmError::ModelNotFound(_) => "not_found",
            LlmError::Overloaded { .. } => "overloaded",
            LlmError::Unavailable { .. } => "unavailable",
            LlmError::DeadlineExceeded(_) => "deadline",
            LlmError::Upstream { .. } => "upstream",
        }
    }
}

/// A caller-supplied value as an error message may quote it: at most 64 characters.
pub(crate) fn quote(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_string(),
    }
}
