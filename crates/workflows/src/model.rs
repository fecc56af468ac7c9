//! The workflow as the rest of Citadel sees it: its states, what a submit asks for, and filters.

use serde_json::Value as Json;

pub use crate::store::entity::Model as Workflow;

/// Celery's states, stored as their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Started,
    Retry,
    Success,
    Failure,
    Cancelled,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Started,
        State::Retry,
        State::Success,
        State::Failure,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Started => "STARTED",
            State::Retry => "RETRY",
            State::Success => "SUCCESS",
            State::Failure => "FAILURE",
            State::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// No further state change happens on its own.
    pub fn is_finished(self) -> bool {
        matches!(self, State::Success | State::Failure | State::Cancelled)
    }
}

impl Workflow {
    /// The idempotency key as its owner gave it (stored scoped by owner).
    pub fn caller_idempotency_key(&self) -> Option<&str> {
        let key = self.idempotency_key.as_deref()?;
        Some(key.split_once(OWNER_SEPARATOR).map_or(key, |(_, k)| k))
    }

    /// The stored state; an unknown name (written by a newer version) reads as PENDING.
    pub fn state(&self) -> State {
        State::parse(&self.state).unwrap_or(State::Pending)
    }

    pub fn params_json(&self) -> Json {
        serde_json::from_str(&self.params).unwrap_or(Json::Null)
    }

    pub fn result_json(&self) -> Option<Json> {
        self.result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
    }
}

/// Between the owner and the key in a stored idempotency key (a control character, which
/// callers' keys may not hold).
pub(crate) const OWNER_SEPARATOR: char = '\u{1f}';

/// Retries after a failed attempt: `max_attempts` in all, backoff doubling from
/// `initial_backoff_ms` up to `max_backoff_ms`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

/// A validated submit.
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    pub kind: String,
    pub params: Json,
    pub idempotency_key: Option<String>,
    pub priority: i32,
    /// Microseconds since the epoch; `None` = now.
    pub not_before_us: Option<i64>,
    pub time_limit_ms: u64,
    pub retry: RetryPolicy,
    /// Who submits it (`None` with auth off). Idempotency keys are the owner's own: the same
    /// key from two principals names two workflows.
    pub owner: Option<String>,
    /// The submitting request's `traceparent` (traces on), for the run to continue.
    pub trace_context: Option<String>,
}

/// `List`'s filter and page.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub states: Vec<State>,
    pub kind: Option<String>,
    pub page_size: u64,
    /// Most bytes of stored text (params, error, progress) in one page; the page ends early
    /// past it, but always holds at least one workflow.
    pub max_bytes: usize,
    /// Opaque cursor from the previous page.
    pub page_token: Option<String>,
    /// Only this principal's workflows.
    pub owner: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Page {
    pub workflows: Vec<Workflow>,
    pub next_page_token: Option<String>,
}
