//! Workflow records and events as protobuf messages, and a submit request as a `NewWorkflow`.

use citadel_proto::{
    json,
    v1::{self, WorkflowState},
};
use citadel_workflows::{NewWorkflow, RetryPolicy, State, Workflow, WorkflowEvent};
use prost_types::Timestamp;
use tonic::Status;

use crate::status::invalid;

pub(crate) fn state(s: State) -> WorkflowState {
    match s {
        State::Pending => WorkflowState::Pending,
        State::Started => WorkflowState::Started,
        State::Retry => WorkflowState::Retry,
        State::Success => WorkflowState::Success,
        State::Failure => WorkflowState::Failure,
        State::Cancelled => WorkflowState::Cancelled,
    }
}

pub(crate) fn from_proto_state(raw: i32) -> Result<State, Status> {
    match WorkflowState::try_from(raw) {
        Ok(WorkflowState::Pending) => Ok(State::Pending),
        Ok(WorkflowState::Started) => Ok(State::Started),
        Ok(WorkflowState::Retry) => Ok(State::Retry),
        Ok(WorkflowState::Success) => Ok(State::Success),
        Ok(WorkflowState::Failure) => Ok(State::Failure),
        Ok(WorkflowState::Cancelled) => Ok(State::Cancelled),
        Ok(WorkflowState::Unspecified) | Err(_) => {
            Err(invalid("states", format!("{raw} is not a workflow state")))
        }
    }
}

fn timestamp(us: i64) -> Timestamp {
    Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: i32::try_from(us.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

fn micros(t: &Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.nanos / 1_000))
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A filter value fit to reach the database: short, no control characters.
pub(crate) fn plain_text(param: &'static str, value: &str) -> Result<(), Status> {
    if value.len() > 255 || value.chars().any(char::is_control) {
        return Err(invalid(
            param,
            "must be at most 255 bytes, without control characters",
        ));
    }
    Ok(())
}

pub(crate) fn workflow(w: &Workflow) -> v1::Workflow {
    v1::Workflow {
        id: w.id.clone(),
        kind: w.kind.clone(),
        params: json::to_struct(&w.params_json()),
        state: state(w.state()).into(),
        priority: w.priority,
        attempts: u32::try_from(w.attempts).unwrap_or(0),
        retry: Some(v1::RetryPolicy {
            max_attempts: u32::try_from(w.max_attempts).unwrap_or(0),
            initial_backoff_ms: unsigned(w.initial_backoff_ms),
            max_backoff_ms: unsigned(w.max_backoff_ms),
        }),
        time_limit_ms: unsigned(w.time_limit_ms),
        progress: Some(v1::Progress {
            done: unsigned(w.progress_done),
            total: unsigned(w.progress_total),
            message: w.progress_message.clone(),
        }),
        result: w.result_json().map(|r| json::to_value(&r)),
        error: w.error.clone().unwrap_or_default(),
        idempotency_key: w.caller_idempotency_key().unwrap_or_default().to_string(),
        cancel_requested: w.cancel_requested,
        worker: w.worker.clone().unwrap_or_default(),
        created_at: Some(timestamp(w.created_us)),
        updated_at: Some(timestamp(w.updated_us)),
        run_at: Some(timestamp(w.run_at_us)),
        started_at: w.started_us.map(timestamp),
        finished_at: w.finished_us.map(timestamp),
        lease_expires_at: w.lease_expires_us.map(timestamp),
        expires_at: w.expires_us.map(timestamp),
    }
}

pub(crate) fn event(e: &WorkflowEvent) -> v1::WorkflowEvent {
    let state = State::parse(&e.state).map_or(WorkflowState::Unspecified, state);
    v1::WorkflowEvent {
        workflow_id: e.id.clone(),
        kind: e.kind.clone(),
        state: state.into(),
        attempts: u32::try_from(e.attempts).unwrap_or(0),
        progress: Some(v1::Progress {
            done: unsigned(e.done),
            total: unsigned(e.total),
            message: e.message.clone().unwrap_or_default(),
        }),
        error: e.error.clone().unwrap_or_default(),
        cancel_requested: e.cancel_requested,
        worker: e.worker.clone().unwrap_or_default(),
        at: Some(timestamp(e.at_us)),
        version: unsigned(e.version),
    }
}

/// Server-side defaults and bounds for what a submit may ask.
#[derive(Debug, Clone, Copy)]
pub struct SubmitDefaults {
    pub time_limit_ms: u64,
    pub retry: RetryPolicy,
    /// Largest `params`, in bytes of JSON.
    pub max_params_bytes: usize,
    /// Most bytes of workflows in one List page.
    pub list_page_max_bytes: usize,
}

const MAX_TIME_LIMIT_MS: u64 = 7 * 24 * 3_600_000;
const MAX_ATTEMPTS: u32 = 100;
const MAX_BACKOFF_MS: u64 = 24 * 3_600_000;
const MAX_KEY_LEN: usize = 255;
/// google.protobuf.Timestamp's range: 0001-01-01 to 9999-12-31.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// Checks the request's own fields (the kind's parameters are the task's to check).
pub(crate) fn new_workflow(
    r: v1::SubmitWorkflowRequest,
    defaults: &SubmitDefaults,
) -> Result<NewWorkflow, Status> {
    if r.idempotency_key.len() > MAX_KEY_LEN || r.idempotency_key.chars().any(char::is_control) {
        let m = format!("must be at most {MAX_KEY_LEN} bytes, without control characters");
        return Err(invalid("idempotency_key", m));
    }
    let not_before = match &r.not_before {
        Some(t) if !(MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) => {
            return Err(invalid(
                "not_before",
                "must be a time between years 1 and 9999",
            ));
        }
        Some(t) => Some(micros(t)),
        None => None,
    };
    if !(-100..=100).contains(&r.priority) {
        return Err(invalid("priority", "must be from -100 to 100"));
    }
    if r.time_limit_ms > MAX_TIME_LIMIT_MS {
        let m = format!("must be at most {MAX_TIME_LIMIT_MS} ms (a week)");
        return Err(invalid("time_limit_ms", m));
    }
    let asked = r.retry.unwrap_or_default();
    let or = |v: u64, d: u64| if v == 0 { d } else { v };
    let retry = RetryPolicy {
        max_attempts: match asked.max_attempts {
            0 => defaults.retry.max_attempts,
            n => n,
        },
        initial_backoff_ms: or(asked.initial_backoff_ms, defaults.retry.initial_backoff_ms),
        max_backoff_ms: or(asked.max_backoff_ms, defaults.retry.max_backoff_ms),
    };
    if retry.max_attempts > MAX_ATTEMPTS {
        let m = format!("must be at most {MAX_ATTEMPTS}");
        return Err(invalid("retry.max_attempts", m));
    }
    if retry.max_backoff_ms > MAX_BACKOFF_MS || retry.initial_backoff_ms > retry.max_backoff_ms {
        let m = "must be at least retry.initial_backoff_ms and at most a day";
        return Err(invalid("retry.max_backoff_ms", m));
    }
    let params = r.params.as_ref().map_or_else(
        || serde_json::Value::Object(serde_json::Map::new()),
        json::from_struct,
    );
    // Stored, listed and sent with every Get: one submit must not grow the table without bound.
    let size = serde_json::to_vec(&params).map_or(usize::MAX, |json| json.len());
    if size > defaults.max_params_bytes {
        let m = format!(
            "is {size} bytes of JSON; this server takes at most {} (workflows.max_params_bytes): \
             pass large inputs as a file (`input_file`)",
            defaults.max_params_bytes
        );
        return Err(invalid("params", m));
    }
    Ok(NewWorkflow {
        kind: r.kind,
        params,
        idempotency_key: Some(r.idempotency_key).filter(|k| !k.is_empty()),
        priority: r.priority,
        not_before_us: not_before,
        time_limit_ms: or(r.time_limit_ms, defaults.time_limit_ms),
        retry,
        owner: None,
    })
}
