//! Workflow records and events as protobuf messages, and a submit request as a `NewWorkflow`.

use citadel_proto::{
    json,
    v1::{self, WorkflowState},
};
use citadel_workflows::{RetryPolicy, State, SubmitRequest, WatchItem, Workflow};
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
        params_json: w.params.clone(),
        result_json: w.result.clone().unwrap_or_default(),
        version: unsigned(w.version),
    }
}

/// A change as Watch sends it: the event's fields, and the whole record when asked for.
pub(crate) fn event(item: &WatchItem) -> v1::WorkflowEvent {
    let e = &item.event;
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
        workflow: item.workflow.as_deref().map(workflow),
        snapshot: item.snapshot,
    }
}

/// A submit as the workflow core takes it (the core checks bounds and applies defaults).
pub(crate) fn submit_request(r: v1::SubmitWorkflowRequest) -> Result<SubmitRequest, Status> {
    let params = if r.params_json.is_empty() {
        r.params.as_ref().map_or_else(
            || serde_json::Value::Object(serde_json::Map::new()),
            json::from_struct,
        )
    } else {
        serde_json::from_str(&r.params_json)
            .map_err(|e| invalid("params_json", format!("is not JSON: {e}")))?
    };
    let retry = r.retry.unwrap_or_default();
    Ok(SubmitRequest {
        kind: r.kind,
        params,
        idempotency_key: Some(r.idempotency_key),
        priority: r.priority,
        not_before_us: r.not_before.as_ref().map(micros),
        time_limit_ms: r.time_limit_ms,
        retry: RetryPolicy {
            max_attempts: retry.max_attempts,
            initial_backoff_ms: retry.initial_backoff_ms,
            max_backoff_ms: retry.max_backoff_ms,
        },
    })
}
