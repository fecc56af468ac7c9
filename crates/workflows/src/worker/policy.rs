//! How an attempt's end becomes the workflow's next state: retry with backoff, or finish.

use crate::{State, Workflow, now_us, store::Finish};

/// How an attempt ended, seen from the worker.
#[derive(Debug)]
pub(crate) enum Ended {
    Succeeded(serde_json::Value),
    Failed(crate::TaskError),
    TimedOut { limit_ms: i64 },
    Cancelled,
}

/// The record to write for `ended`, given the workflow as claimed.
pub(crate) fn finish(workflow: &Workflow, ended: Ended) -> Finish {
    let (error, retryable) = match ended {
        Ended::Succeeded(result) => {
            return Finish {
                state: State::Success,
                result: Some(result.to_string()),
                error: None,
                run_at_us: None,
                progress: None,
            };
        }
        Ended::Cancelled => {
            return Finish {
                state: State::Cancelled,
                result: None,
                error: Some("cancelled while running".into()),
                run_at_us: None,
                progress: None,
            };
        }
        Ended::Failed(e) => (e.message, e.retryable),
        Ended::TimedOut { limit_ms } => (
            format!("the attempt ran past its time limit of {limit_ms} ms and was abandoned"),
            true,
        ),
    };
    if retryable && workflow.attempts < workflow.max_attempts {
        let delay = backoff_ms(workflow);
        return Finish {
            state: State::Retry,
            result: None,
            error: Some(error),
            run_at_us: Some(now_us().saturating_add(delay.saturating_mul(1_000))),
            progress: None,
        };
    }
    let error = if retryable {
        format!(
            "{error} (attempt {} of {})",
            workflow.attempts, workflow.max_attempts
        )
    } else {
        error
    };
    Finish {
        state: State::Failure,
        result: None,
        error: Some(error),
        run_at_us: None,
        progress: None,
    }
}

/// Exponential backoff with "equal jitter": half the doubled delay for sure, the other half at
/// random, so retries of many failed workflows spread out yet never come back at once.
pub(crate) fn backoff_ms(workflow: &Workflow) -> i64 {
    let doublings = u32::try_from(workflow.attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let initial = workflow.initial_backoff_ms.max(0);
    let full = initial
        .saturating_mul(1_i64 << doublings)
        .min(workflow.max_backoff_ms.max(initial));
    let half = full / 2;
    half + fastrand::i64(0..=full - half)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(attempts: i32, max_attempts: i32) -> Workflow {
        Workflow {
            id: "w".into(),
            kind: "sleep".into(),
            params: "{}".into(),
            state: "STARTED".into(),
            priority: 0,
            attempts,
            max_attempts,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            time_limit_ms: 1_000,
            idempotency_key: None,
            progress_done: 0,
            progress_total: 0,
            progress_message: String::new(),
            result: None,
            error: None,
            cancel_requested: false,
            worker: None,
            lease_expires_us: None,
            created_us: 0,
            updated_us: 0,
            run_at_us: 0,
            started_us: None,
            finished_us: None,
            expires_us: None,
            version: 0,
            checkpoint: None,
            owner: None,
            trace_context: None,
        }
    }

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_ceiling() {
        for _ in 0..200 {
            let first = backoff_ms(&workflow(1, 5));
            assert!((50..=100).contains(&first), "{first}");
            let third = backoff_ms(&workflow(3, 5));
            assert!((200..=400).contains(&third), "{third}");
            let late = backoff_ms(&workflow(20, 30));
            assert!((500..=1_000).contains(&late), "{late}");
        }
    }

    #[test]
    fn retryable_failures_retry_until_the_last_attempt() {
        let err = || Ended::Failed(crate::TaskError::retryable("flaky"));
        assert_eq!(finish(&workflow(1, 3), err()).state, State::Retry);
        assert_eq!(finish(&workflow(3, 3), err()).state, State::Failure);
        let permanent = Ended::Failed(crate::TaskError::permanent("bad"));
        assert_eq!(finish(&workflow(1, 3), permanent).state, State::Failure);
        let timed_out = Ended::TimedOut { limit_ms: 5 };
        assert_eq!(finish(&workflow(1, 2), timed_out).state, State::Retry);
    }
}
