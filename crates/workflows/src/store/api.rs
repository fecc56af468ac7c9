//! What clients ask of the store: submit (with idempotency keys), get, list, cancel, retry.

use std::sync::LazyLock;

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, Iterable, QueryFilter, QueryOrder,
    QuerySelect, Value, sea_query::Expr,
};

use super::{
    RETURNING, Store, StoreError,
    entity::{Column, Entity},
};
use crate::{ListFilter, NewWorkflow, Page, State, Workflow, now_us};

/// What `cancel` did.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// It had not started: it is CANCELLED now.
    Cancelled(Workflow),
    /// It is running: its worker has been asked to stop and will record CANCELLED.
    Requested(Workflow),
}

static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO workflows (id, kind, params, state, priority, max_attempts, \
    initial_backoff_ms, max_backoff_ms, time_limit_ms, idempotency_key, created_us, \
    updated_us, run_at_us, version, owner, trace_context) \
    VALUES ($1, $2, $3, 'PENDING', $4, $5, $6, $7, $8, $9, $10, $10, $11, 1, $12, $13) \
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING {}",
        *RETURNING
    )
});

impl Store {
    /// Queues `new`. Returns the workflow and whether it was created: an idempotency key seen
    /// before returns the first workflow, unless that one asked for something else.
    pub async fn submit(&self, new: &NewWorkflow) -> Result<(Workflow, bool), StoreError> {
        let now = now_us();
        let id = uuid::Uuid::new_v4().to_string();
        let params = new.params.to_string();
        let scoped_key = new.idempotency_key.as_ref().map(|key| match &new.owner {
            Some(owner) => format!("{owner}{}{key}", crate::model::OWNER_SEPARATOR),
            None => key.clone(),
        });
        let values: Vec<Value> = vec![
            id.into(),
            new.kind.clone().into(),
            params.clone().into(),
            new.priority.into(),
            i32::try_from(new.retry.max_attempts)
                .unwrap_or(i32::MAX)
                .into(),
            clamp(new.retry.initial_backoff_ms).into(),
            clamp(new.retry.max_backoff_ms).into(),
            clamp(new.time_limit_ms).into(),
            scoped_key.clone().into(),
            now.into(),
            new.not_before_us.unwrap_or(now).into(),
            new.owner.clone().into(),
            new.trace_context.clone().into(),
        ];
        let stmt = self.statement(&INSERT, values);
        if let Some(created) = self.write_rows(stmt).await?.pop() {
            crate::metrics::metrics().submitted(&new.kind, true);
            return Ok((created, true));
        }
        // The key is taken: return the workflow that took it.
        let key = scoped_key.unwrap_or_default();
        let shown = new.idempotency_key.clone().unwrap_or_default();
        let existing = Entity::find()
            .filter(Column::IdempotencyKey.eq(key.clone()))
            .one(&self.db)
            .await?
            .ok_or_else(|| {
                // Deleted (result expiry) between the insert and this read.
                StoreError::Unavailable(format!("idempotency key {shown:?} changed hands; retry"))
            })?;
        if existing.kind != new.kind || existing.params != params {
            return Err(StoreError::IdempotencyKeyReused(format!(
                "idempotency key {shown:?} was first used for workflow {} with other parameters",
                existing.id
            )));
        }
        crate::metrics::metrics().submitted(&new.kind, false);
        Ok((existing, false))
    }

    pub async fn get(&self, id: &str) -> Result<Workflow, StoreError> {
        known_shape(id)?;
        Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    /// Newest first. The page token is the last row's `(created_us, id)`.
    pub async fn list(&self, filter: &ListFilter) -> Result<Page, StoreError> {
        let mut query = Entity::find();
        if !filter.states.is_empty() {
            query = query.filter(Column::State.is_in(filter.states.iter().map(|s| s.as_str())));
        }
        if let Some(kind) = &filter.kind {
            query = query.filter(Column::Kind.eq(kind.clone()));
        }
        if let Some(owner) = &filter.owner {
            query = query.filter(Column::Owner.eq(owner.clone()));
        }
        if let Some(token) = &filter.page_token {
            let (created, id) = parse_token(token)?;
            query = query.filter(
                Condition::any().add(Column::CreatedUs.lt(created)).add(
                    Condition::all()
                        .add(Column::CreatedUs.eq(created))
                        .add(Column::Id.lt(id)),
                ),
            );
        }
        // Results stay out of lists (one can be megabytes of vectors); Get has them.
        let without_result = Column::iter().filter(|c| !matches!(c, Column::Result));
        let mut workflows = query
            .select_only()
            .columns(without_result)
            .column_as(Expr::cust("CAST(NULL AS TEXT)"), "result")
            .order_by_desc(Column::CreatedUs)
            .order_by_desc(Column::Id)
            .limit(filter.page_size + 1)
            .all(&self.db)
            .await?;
        let mut more = workflows.len() as u64 > filter.page_size;
        workflows.truncate(usize::try_from(filter.page_size).unwrap_or(usize::MAX));
        // Bounded by bytes too, so a few huge rows cannot make a page too big to send.
        let fits = fitting(&workflows, filter.max_bytes);
        if fits < workflows.len() {
            workflows.truncate(fits);
            more = true;
        }
        let next_page_token = match workflows.last() {
            Some(last) if more => Some(format!("{}.{}", last.created_us, last.id)),
            _ => None,
        };
        Ok(Page {
            workflows,
            next_page_token,
        })
    }

    /// Cancels a queued workflow at once, or asks a running one's worker to stop. A finished
    /// workflow (SUCCESS, FAILURE or CANCELLED) has nothing left to cancel: a conflict, alike
    /// for all three. A second cancel of a running one whose cancel is pending returns it.
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome, StoreError> {
        known_shape(id)?;
        // The state can move between our reads (a worker claims it): try again, briefly.
        for _ in 0..4 {
            let now = now_us();
            let queued = self.statement(
                &format!(
                    "UPDATE workflows SET state = 'CANCELLED', cancel_requested = TRUE, \
                     error = 'cancelled before it started', finished_us = $1, updated_us = $1, \
                     expires_us = $2, version = version + 1 \
                     WHERE id = $3 AND state IN ('PENDING', 'RETRY') {}",
                    *RETURNING
                ),
                vec![now.into(), self.expiry(now).into(), id.into()],
            );
            if let Some(w) = self.write_rows(queued).await?.pop() {
                return Ok(CancelOutcome::Cancelled(w));
            }
            let running = self.statement(
                &format!(
                    "UPDATE workflows SET cancel_requested = TRUE, updated_us = $1, \
                     version = version + 1 \
                     WHERE id = $2 AND state = 'STARTED' AND cancel_requested = FALSE {}",
                    *RETURNING
                ),
                vec![now.into(), id.into()],
            );
            if let Some(w) = self.write_rows(running).await?.pop() {
                return Ok(CancelOutcome::Requested(w));
            }
            let current = self.get(id).await?;
            match current.state() {
                State::Started if current.cancel_requested => {
                    return Ok(CancelOutcome::Requested(current));
                }
                s @ (State::Success | State::Failure | State::Cancelled) => {
                    return Err(StoreError::Conflict(format!(
                        "workflow {id} has already finished ({}): there is nothing to cancel",
                        s.as_str()
                    )));
                }
                State::Pending | State::Started | State::Retry => {}
            }
        }
        Err(StoreError::Unavailable(format!(
            "workflow {id} kept changing state; try the cancel again"
        )))
    }

    /// Queues a FAILURE or CANCELLED workflow again, with its attempts reset.
    /// Queues a FAILURE or CANCELLED workflow again; its next run joins `trace_context` (the
    /// retry request's trace), not the first submit's.
    pub async fn retry(
        &self,
        id: &str,
        trace_context: Option<String>,
    ) -> Result<Workflow, StoreError> {
        known_shape(id)?;
        let now = now_us();
        let sql = format!(
            "UPDATE workflows SET state = 'PENDING', attempts = 0, error = NULL, result = NULL, \
             cancel_requested = FALSE, progress_done = 0, progress_total = 0, \
             progress_message = '', run_at_us = $1, started_us = NULL, finished_us = NULL, \
             expires_us = NULL, lease_expires_us = NULL, updated_us = $1, \
             version = version + 1, trace_context = $3 \
             WHERE id = $2 AND state IN ('FAILURE', 'CANCELLED') {}",
            *RETURNING
        );
        let stmt = self.statement(&sql, vec![now.into(), id.into(), trace_context.into()]);
        if let Some(w) = self.write_rows(stmt).await?.pop() {
            return Ok(w);
        }
        let current = self.get(id).await?;
        Err(StoreError::Conflict(format!(
            "workflow {id} is {}: only FAILURE or CANCELLED workflows can be retried",
            current.state().as_str()
        )))
    }

    /// When a workflow finishing at `now` is deleted.
    pub(crate) fn expiry(&self, now: i64) -> i64 {
        let ttl = i64::try_from(self.result_ttl.as_micros()).unwrap_or(i64::MAX);
        now.saturating_add(ttl)
    }
}

/// Ids are UUIDs: anything else names no workflow, and never reaches the database (where a
/// NUL byte, say, would be an error rather than "not found").
fn known_shape(id: &str) -> Result<(), StoreError> {
    match uuid::Uuid::parse_str(id) {
        Ok(_) => Ok(()),
        Err(_) => Err(StoreError::NotFound(id.chars().take(64).collect())),
    }
}

fn parse_token(token: &str) -> Result<(i64, String), StoreError> {
    token
        .split_once('.')
        .and_then(|(created, id)| {
            uuid::Uuid::parse_str(id).ok()?;
            Some((created.parse().ok()?, id.to_string()))
        })
        .ok_or_else(|| {
            StoreError::InvalidArgument(
                "page_token is not one this server issued; start again without it".into(),
            )
        })
}

fn clamp(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// How many of `rows` (in order) fit in `max_bytes` of stored text; at least one.
fn fitting(rows: &[Workflow], max_bytes: usize) -> usize {
    let mut total = 0usize;
    for (i, row) in rows.iter().enumerate() {
        // The fixed fields of a row, besides its texts.
        total = total.saturating_add(256 + row.params.len() + row.kind.len());
        total = total.saturating_add(row.error.as_ref().map_or(0, String::len));
        total = total.saturating_add(row.progress_message.len());
        if total > max_bytes {
            return i.max(1);
        }
    }
    rows.len()
}

/// The queue: unfinished workflows by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub pending: u64,
    pub started: u64,
    pub retry: u64,
}

impl Store {
    /// Unfinished workflows by state, of one kind and one owner when given. The partial
    /// indexes on unfinished states keep it cheap however many finished rows the table holds.
    pub async fn queue_depth(
        &self,
        kind: Option<&str>,
        owner: Option<&str>,
    ) -> Result<QueueDepth, StoreError> {
        let mut sql = String::from(
            "SELECT state, COUNT(*) AS n FROM workflows \
             WHERE state IN ('PENDING', 'STARTED', 'RETRY')",
        );
        let mut values = Vec::new();
        for (column, value) in [("kind", kind), ("owner", owner)] {
            if let Some(value) = value {
                values.push(Value::from(value));
                sql.push_str(&format!(" AND {column} = ${}", values.len()));
            }
        }
        sql.push_str(" GROUP BY state");
        let rows = self.db.query_all_raw(self.statement(&sql, values)).await?;
        let mut depth = QueueDepth::default();
        for row in rows {
            let state: String = row.try_get("", "state")?;
            let n = u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0);
            match State::parse(&state) {
                Some(State::Pending) => depth.pending = n,
                Some(State::Started) => depth.started = n,
                Some(State::Retry) => depth.retry = n,
                _ => {}
            }
        }
        Ok(depth)
    }
}
