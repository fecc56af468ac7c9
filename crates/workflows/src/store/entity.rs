//! The `workflows` table as a sea-orm entity. Timestamps are microseconds since the epoch
//! (`*_us`), so one schema runs on PostgreSQL and SQLite alike and sorts without time zones.
//! `version` grows with every change that is an event (state, progress, cancel request); the
//! triggers in `migration.rs` publish exactly those, so a heartbeat's lease extension is silent.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "workflows")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub kind: String,
    /// The task's parameters, as JSON text.
    pub params: String,
    /// A `State` name.
    pub state: String,
    pub priority: i32,
    /// Attempts started; with `worker` it fences a lease (a claim bumps it).
    pub attempts: i32,
    pub max_attempts: i32,
    pub initial_backoff_ms: i64,
    pub max_backoff_ms: i64,
    pub time_limit_ms: i64,
    pub idempotency_key: Option<String>,
    pub progress_done: i64,
    pub progress_total: i64,
    pub progress_message: String,
    /// The result, as JSON text, once SUCCESS.
    pub result: Option<String>,
    pub error: Option<String>,
    pub cancel_requested: bool,
    /// The worker holding the lease, or the last one that did.
    pub worker: Option<String>,
    pub lease_expires_us: Option<i64>,
    pub created_us: i64,
    pub updated_us: i64,
    /// When it may (next) be claimed.
    pub run_at_us: i64,
    pub started_us: Option<i64>,
    pub finished_us: Option<i64>,
    /// When the finished record is deleted.
    pub expires_us: Option<i64>,
    pub version: i64,
    /// What the running task recorded it has finished (JSON text), for its next attempt.
    pub checkpoint: Option<String>,
    /// Who submitted it (a token's subject or `key:<id>`); `None` with auth off.
    pub owner: Option<String>,
    /// The submit's W3C `traceparent`, when traces were on: the run continues that trace.
    pub trace_context: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
