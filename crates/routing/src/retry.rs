//! Backoff between attempts: exponential with full jitter (AWS's "full jitter"), at least the
//! server's `Retry-After`, and never past the caller's deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::RetryPolicy;

/// The pause before attempt number `attempt` (1 = the first retry).
pub(crate) fn backoff(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = policy
        .initial_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(policy.max_backoff);
    let jittered = exp.mul_f64(fastrand::f64());
    jittered.max(retry_after.unwrap_or_default())
}

/// Whether sleeping `pause` still leaves time for an attempt before `deadline`.
pub(crate) fn fits(pause: Duration, deadline: Option<Instant>) -> bool {
    deadline.is_none_or(|d| Instant::now() + pause < d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_bounds_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
        };
        for _ in 0..100 {
            assert!(backoff(&policy, 1, None) <= Duration::from_millis(100));
            assert!(backoff(&policy, 2, None) <= Duration::from_millis(200));
            assert!(backoff(&policy, 9, None) <= Duration::from_millis(250));
            let after = Some(Duration::from_secs(2));
            assert!(backoff(&policy, 1, after) >= Duration::from_secs(2));
        }
        assert!(!fits(Duration::from_secs(1), Some(Instant::now())));
        assert!(fits(Duration::from_secs(1), None));
    }
}
