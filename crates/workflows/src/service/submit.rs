//! What a submit may ask for, its bounds and the server's defaults.

use serde_json::Value as Json;

use super::WorkflowError;
use crate::{NewWorkflow, RetryPolicy};

/// Server-side defaults and bounds for what a submit may ask (`[workflows]`).
#[derive(Debug, Clone, Copy)]
pub struct SubmitLimits {
    pub time_limit_ms: u64,
    pub retry: RetryPolicy,
    /// Largest `params`, in bytes of JSON.
    pub max_params_bytes: usize,
    /// Most bytes of workflows in one List page.
    pub list_page_max_bytes: usize,
}

/// A submit as an edge received it; zeros and `None`s take the server's defaults.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    pub kind: String,
    /// A JSON object (checked by the kind).
    pub params: Json,
    pub idempotency_key: Option<String>,
    pub priority: i32,
    /// Not started before this time (microseconds since the epoch).
    pub not_before_us: Option<i64>,
    pub time_limit_ms: u64,
    /// Fields left 0 take the defaults.
    pub retry: RetryPolicy,
}

const MAX_TIME_LIMIT_MS: u64 = 7 * 24 * 3_600_000;
const MAX_ATTEMPTS: u32 = 100;
const MAX_BACKOFF_MS: u64 = 24 * 3_600_000;
const MAX_KEY_LEN: usize = 255;
/// Years 1 to 9999 (google.protobuf.Timestamp's range, and every database's).
const MIN_US: i64 = -62_135_596_800 * 1_000_000;
const MAX_US: i64 = 253_402_300_799 * 1_000_000;

impl SubmitRequest {
    /// Checks the request's own fields (the kind's parameters are the task's to check).
    pub(crate) fn into_new(self, limits: &SubmitLimits) -> Result<NewWorkflow, WorkflowError> {
        let key = self.idempotency_key.filter(|k| !k.is_empty());
        if key
            .as_deref()
            .is_some_and(|k| k.len() > MAX_KEY_LEN || k.chars().any(char::is_control))
        {
            let m = format!("must be at most {MAX_KEY_LEN} bytes, without control characters");
            return Err(WorkflowError::invalid("idempotency_key", m));
        }
        if self
            .not_before_us
            .is_some_and(|t| !(MIN_US..=MAX_US).contains(&t))
        {
            return Err(WorkflowError::invalid(
                "not_before",
                "must be a time between years 1 and 9999",
            ));
        }
        if !(-100..=100).contains(&self.priority) {
            return Err(WorkflowError::invalid(
                "priority",
                "must be from -100 to 100",
            ));
        }
        if self.time_limit_ms > MAX_TIME_LIMIT_MS {
            let m = format!("must be at most {MAX_TIME_LIMIT_MS} ms (a week)");
            return Err(WorkflowError::invalid("time_limit_ms", m));
        }
        let or = |v: u64, d: u64| if v == 0 { d } else { v };
        let retry = RetryPolicy {
            max_attempts: match self.retry.max_attempts {
                0 => limits.retry.max_attempts,
                n => n,
            },
            initial_backoff_ms: or(
                self.retry.initial_backoff_ms,
                limits.retry.initial_backoff_ms,
            ),
            max_backoff_ms: or(self.retry.max_backoff_ms, limits.retry.max_backoff_ms),
        };
        if retry.max_attempts > MAX_ATTEMPTS {
            let m = format!("must be at most {MAX_ATTEMPTS}");
            return Err(WorkflowError::invalid("retry.max_attempts", m));
        }
        if retry.max_backoff_ms > MAX_BACKOFF_MS || retry.initial_backoff_ms > retry.max_backoff_ms
        {
            let m = "must be at least retry.initial_backoff_ms and at most a day";
            return Err(WorkflowError::invalid("retry.max_backoff_ms", m));
        }
        if !self.params.is_object() {
            return Err(WorkflowError::invalid("params", "must be a JSON object"));
        }
        // Stored, listed and sent with every Get: one submit must not grow the table without
        // bound.
        let size = serde_json::to_vec(&self.params).map_or(usize::MAX, |json| json.len());
        if size > limits.max_params_bytes {
            let m = format!(
                "is {size} bytes of JSON; this server takes at most {} \
                 (workflows.max_params_bytes): pass large inputs as a file (`input_file`)",
                limits.max_params_bytes
            );
            return Err(WorkflowError::invalid("params", m));
        }
        Ok(NewWorkflow {
            kind: self.kind,
            params: self.params,
            idempotency_key: key,
            priority: self.priority,
            not_before_us: self.not_before_us,
            time_limit_ms: or(self.time_limit_ms, limits.time_limit_ms),
            retry,
            owner: None,
            trace_context: None,
        })
    }
}
