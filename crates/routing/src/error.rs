//! Why a routed call gave up, in terms every adapter can map to its own service's error.

use std::time::Duration;

use crate::AttemptError;

#[derive(Debug, Clone)]
pub enum RouteError {
    /// The upstream judged the request itself (400, 413, 422): another server would refuse it
    /// the same way, so it was not retried.
    Refused {
        endpoint: String,
        error: AttemptError,
    },
    /// No server could take it now (every breaker open, or transient failures on all that
    /// were tried); may pass.
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
        /// The last attempt's failure, when there was one.
        last: Option<AttemptError>,
    },
    /// A server answered something unusable, or a status that is neither the caller's fault
    /// nor a passing one.
    Upstream {
        endpoint: String,
        error: AttemptError,
    },
    /// The caller's deadline passed before an attempt succeeded.
    DeadlineExceeded { elapsed: Duration },
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::Refused { endpoint, error } => {
                write!(f, "upstream {endpoint} refused the request: {error}")
            }
            RouteError::Unavailable { reason, .. } => f.write_str(reason),
            RouteError::Upstream { endpoint, error } => write!(f, "upstream {endpoint} {error}"),
            RouteError::DeadlineExceeded { elapsed } => {
                write!(f, "deadline exceeded after {}ms", elapsed.as_millis())
            }
        }
    }
}

impl std::error::Error for RouteError {}
