//! One call to one endpoint, and what its failure means for retrying, for the endpoint's
//! breaker and for the caller.

use std::time::Duration;

use serde_json::Value;

/// Why one attempt failed.
#[derive(Debug, Clone)]
pub enum AttemptError {
    /// No connection, or it broke before an answer (refused, reset, DNS).
    Connect(String),
    /// No answer (or no next piece of one) within the time allowed.
    Timeout(Duration),
    /// The server answered a non-2xx status.
    Status {
        code: u16,
        error: UpstreamError,
        retry_after: Option<Duration>,
    },
    /// A 2xx answer that is not usable: malformed JSON, wrong count or dimensions, a stream
    /// that ended before its first event.
    Malformed(String),
}

/// What an error body said, whatever the server's dialect: OpenAI's and current vLLM's
/// `{"error": {"message", "type", "param", "code"}}`, older vLLM's flat
/// `{"object": "error", "message", ...}`, Ollama's `{"error": "..."}`, FastAPI's `{"detail"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamError {
    /// At most 200 characters.
    pub message: String,
    pub kind: Option<String>,
    pub param: Option<String>,
}

impl UpstreamError {
    pub fn parse(body: &[u8]) -> UpstreamError {
        let cut = |s: &str| s.chars().take(200).collect::<String>();
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            let message = cut(&String::from_utf8_lossy(body));
            return UpstreamError {
                message,
                ..UpstreamError::default()
            };
        };
        // The nested shape, else the flat one: both carry the same fields.
        let fields = match value.get("error") {
            Some(nested @ Value::Object(_)) => nested,
            _ => &value,
        };
        let text = |key: &str| match fields.get(key) {
            Some(Value::String(s)) => Some(cut(s)),
            _ => None,
        };
        let message = text("message")
            .or_else(
                || match value.get("error").or_else(|| value.get("detail")) {
                    Some(Value::String(s)) => Some(cut(s)),
                    Some(other) => Some(cut(&other.to_string())),
                    None => None,
                },
            )
            .unwrap_or_else(|| cut(&value.to_string()));
        UpstreamError {
            message,
            kind: text("type"),
            param: text("param"),
        }
    }
}

impl AttemptError {
    /// The server judged the input itself: another attempt would be refused the same way.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            AttemptError::Status {
                code: 400 | 413 | 422,
                ..
            }
        )
    }

    /// Worth another attempt (on another endpoint when there is one).
    pub fn is_retryable(&self) -> bool {
        !self.is_input_error()
    }

    /// Overload or an outage that may pass: the caller gets UNAVAILABLE, not an upstream fault.
    pub fn is_transient(&self) -> bool {
        match self {
            AttemptError::Connect(_) | AttemptError::Timeout(_) => true,
            AttemptError::Status { code, .. } => matches!(code, 408 | 429 | 500..=599),
            AttemptError::Malformed(_) => false,
        }
    }

    /// Counts toward opening the endpoint's breaker. A 429 is the server protecting itself, a
    /// 413 our batch size, and an input error the caller's: none says the endpoint is broken.
    pub fn counts_against_endpoint(&self) -> bool {
        !self.is_input_error()
            && !matches!(
                self,
                AttemptError::Status {
                    code: 413 | 429,
                    ..
                }
            )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            AttemptError::Connect(_) => "connect_error",
            AttemptError::Timeout(_) => "timeout",
            AttemptError::Status { code: 429, .. } => "status_429",
            AttemptError::Status {
                code: 500..=599, ..
            } => "status_5xx",
            AttemptError::Status { .. } => "status_4xx",
            AttemptError::Malformed(_) => "malformed",
        }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Connect(e) => write!(f, "could not be reached: {e}"),
            AttemptError::Timeout(after) => {
                write!(f, "did not answer within {}ms", after.as_millis())
            }
            AttemptError::Status { code, error, .. } => {
                write!(f, "answered {code}: {}", error.message)
            }
            AttemptError::Malformed(e) => f.write_str(e),
        }
    }
}

/// `Retry-After` in seconds (HTTP dates are rare from these servers and are ignored).
pub(crate) fn parse_retry_after(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let seconds: f64 = value?.to_str().ok()?.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

/// The innermost cause of a transport error, which is where the useful words are.
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        message = inner.to_string();
        cause = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn error_bodies_of_every_dialect_are_read() {
        let nested = br#"{"error": {"message": "too long", "type": "BadRequestError", "param": "input_tokens", "code": 400}}"#;
        let e = UpstreamError::parse(nested);
        assert_eq!(e.message, "too long");
        assert_eq!(e.param.as_deref(), Some("input_tokens"));
        assert_eq!(e.kind.as_deref(), Some("BadRequestError"));
        let flat = br#"{"object": "error", "message": "no", "type": "NotFoundError", "param": "model", "code": 404}"#;
        assert_eq!(UpstreamError::parse(flat).param.as_deref(), Some("model"));
        assert_eq!(
            UpstreamError::parse(br#"{"error": "ollama says"}"#).message,
            "ollama says"
        );
        assert_eq!(UpstreamError::parse(br#"{"detail": "bad"}"#).message, "bad");
        assert_eq!(UpstreamError::parse(b"plain text").message, "plain text");
    }
}
