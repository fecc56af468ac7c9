//! Durable workflows: Celery's task model on Citadel's own database.
//!
//! This crate owns the workflow core every edge calls (`Workflows`: submit bounds and defaults,
//! kind checks, page limits, who sees what, Watch's snapshot and resume point), the workflow
//! record and its migrations (sea-orm, PostgreSQL or SQLite), the
//! queue built on that table (claims with `FOR UPDATE SKIP LOCKED`, leases and heartbeats,
//! retries with backoff, time limits, cancellation, idempotency keys, result expiry), the event
//! feed that turns every state change into a `WorkflowEvent` (PostgreSQL NOTIFY, or a trigger-fed
//! outbox table on SQLite), the worker that runs tasks, and the built-in task kinds. It must not
//! know about gRPC services or HTTP: `citadel-grpc` serves it, the gateway reaches it through
//! gRPC, and the one outward call it makes (`embed_batch`, `cache_warm`) goes through
//! `EmbeddingService` like any other client.

#![forbid(unsafe_code)]

mod events;
mod metrics;
mod model;
mod monitor;
mod service;
mod store;
mod task;
pub mod tasks;
mod worker;

pub use events::{EventHub, WorkflowEvent};
pub use model::{ListFilter, NewWorkflow, Page, RetryPolicy, State, Workflow};
pub use monitor::DatabaseState;
pub use service::{
    ListRequest, SubmitLimits, SubmitRequest, Viewer, Watch, WatchItem, WatchRequest,
    WorkflowError, Workflows,
};
pub use store::{CancelOutcome, QueueDepth, Store, StoreError, backup};
pub use task::{Registry, Task, TaskContext, TaskError};
pub use worker::{Worker, WorkerSettings};

/// Microseconds since the Unix epoch: every timestamp in the store, portable across databases.
pub fn now_us() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
