//! The task interface. A kind is one `Task` implementation registered in a `Registry`: it checks
//! its parameters when the workflow is submitted (bad input is a 400, not a FAILURE an hour
//! later) and runs one attempt when a worker claims it. The worker owns everything around the
//! attempt — leases, time limit, retries, cancellation, recording the outcome — so a new kind
//! (an LLM chain, a Qdrant ingestion) is one file and one `register` call.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use crate::{Store, store::Lease};

#[async_trait::async_trait]
pub trait Task: Send + Sync + 'static {
    /// The name clients submit (`embed_batch`).
    fn kind(&self) -> &'static str;

    /// Checks `params` at submit time; the message names the offending field.
    fn validate(&self, params: &Json) -> Result<(), String>;

    /// Runs one attempt. The future may be dropped at any await point (time limit, cancel,
    /// shutdown), so a task must leave nothing half-written that a retry would trip over.
    async fn run(&self, ctx: TaskContext) -> Result<Json, TaskError>;
}

/// Why an attempt failed, and whether another attempt could do better.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    pub message: String,
    pub retryable: bool,
}

impl TaskError {
    /// A passing fault (an upstream outage, a full queue): retried under the retry policy.
    pub fn retryable(message: impl Into<String>) -> TaskError {
        TaskError {
            message: message.into(),
            retryable: true,
        }
    }

    /// Another attempt would fail the same way (bad parameters, a missing file).
    pub fn permanent(message: impl Into<String>) -> TaskError {
        TaskError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// What a running attempt may see and do.
pub struct TaskContext {
    pub workflow_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub params: Json,
    /// What an earlier attempt recorded with `save_checkpoint`, if any.
    pub(crate) checkpoint: Option<Json>,
    pub(crate) store: Store,
    pub(crate) lease: Lease,
    pub(crate) cancel: CancellationToken,
    /// Progress to record with the outcome rather than on its own (`final_progress`).
    pub(crate) last: std::sync::Arc<std::sync::Mutex<Option<(u64, u64, String)>>>,
}

impl TaskContext {
    /// Records progress (published as an event). A failed write is logged, not fatal: progress
    /// is advisory, the outcome is what counts.
    pub async fn progress(&self, done: u64, total: u64, message: &str) {
        match self.store.progress(&self.lease, done, total, message).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!(id = %self.workflow_id, "progress after the lease ended"),
            Err(e) => tracing::warn!(id = %self.workflow_id, error = %e, "progress not recorded"),
        }
    }

    /// What an earlier attempt of this workflow had finished (its last `save_checkpoint`;
    /// kept until the workflow succeeds, so a manual retry of a failure resumes too).
    pub fn checkpoint(&self) -> Option<&Json> {
        self.checkpoint.as_ref()
    }

    /// Records what this attempt has finished, so a retry can skip it. Fenced by the lease
    /// like every write; a failed write is logged (the retry then redoes more, nothing worse).
    pub async fn save_checkpoint(&self, value: &Json) {
        let text = value.to_string();
        match self.store.checkpoint(&self.lease, &text).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(id = %self.workflow_id, "checkpoint after the lease ended")
            }
            Err(e) => tracing::warn!(id = %self.workflow_id, error = %e, "checkpoint not recorded"),
        }
    }

    /// Progress that is only worth showing if the attempt succeeds (its last step): written
    /// with the outcome, in the same statement, instead of as a write of its own.
    pub fn final_progress(&self, done: u64, total: u64, message: &str) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some((done, total, message.to_string()));
    }

    /// Resolves when the attempt should stop (a cancel request, shutdown, a lost lease). The
    /// worker drops the task's future at the same moment, so this serves tasks that check
    /// between steps (`is_cancelled`), not clean-up: keep partial work safe to abandon.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// The kinds this process knows, by name.
#[derive(Clone, Default)]
pub struct Registry {
    tasks: BTreeMap<&'static str, Arc<dyn Task>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register(&mut self, task: impl Task) -> &mut Registry {
        self.tasks.insert(task.kind(), Arc::new(task));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Task>> {
        self.tasks.get(kind)
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.tasks.keys().copied().collect()
    }
}
