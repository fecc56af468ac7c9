//! One call to one endpoint, and what its failure means for retrying, for the endpoint's
//! breaker and for the caller.

use std::time::Duration;

/// Why one attempt failed.
#[derive(Debug, Clone)]
pub(crate) enum AttemptError {
    /// No connection, or it broke before an answer (refused, reset, DNS).
    Connect(String),
    /// No answer within the attempt's time.
    Timeout(Duration),
    /// The server answered a non-2xx status.
    Status {
        code: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A 2xx answer that is not usable: malformed JSON, wrong count or dimensions.
    Malformed(String),
}

impl AttemptError {
    /// The server judged the input itself: another attempt would be refused the same way.
    pub(crate) fn is_input_error(&self) -> bool {
        matches!(
            self,
            AttemptError::Status {
                code: 400 | 413 | 422,
                ..
            }
        )
    }

    /// Worth another attempt (on another endpoint when there is one).
    pub(crate) fn is_retryable(&self) -> bool {
        !self.is_input_error()
    }

    /// Overload or an outage that may pass: the caller gets UNAVAILABLE, not an upstream fault.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            AttemptError::Connect(_) | AttemptError::Timeout(_) => true,
            AttemptError::Status { code, .. } => matches!(code, 408 | 429 | 500..=599),
            AttemptError::Malformed(_) => false,
        }
    }

    /// Counts toward opening the endpoint's breaker. A 429 is the server protecting itself, a
    /// 413 our batch size, and an input error the caller's: none says the endpoint is broken.
    pub(crate) fn counts_against_endpoint(&self) -> bool {
        !self.is_input_error()
            && !matches!(
                self,
                AttemptError::Status {
                    code: 413 | 429,
                    ..
                }
            )
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for metrics.
    pub(crate) fn outcome(&self) -> &'static str {
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
            AttemptError::Status { code, message, .. } => write!(f, "answered {code}: {message}"),
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
