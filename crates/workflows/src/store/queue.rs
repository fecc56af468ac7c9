//! What workers do to the table. Every write that ends or moves an attempt is fenced by its
//! lease — `(id, worker, started_us)` — so a worker that lost its lease (it stalled, the reaper
//! gave the task to another) can never overwrite the new holder's outcome: exactly one
//! attempt's result is recorded.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, Value};

use super::{Store, StoreError};
use crate::{Workflow, now_us};

/// The claim on one attempt of one workflow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Lease {
    pub id: String,
    pub worker: String,
    pub started_us: i64,
}

impl Lease {
    pub(crate) fn of(workflow: &Workflow, worker: &str) -> Lease {
        Lease {
            id: workflow.id.clone(),
            worker: worker.to_string(),
            started_us: workflow.started_us.unwrap_or_default(),
        }
    }

    fn fence(&self, first: usize) -> (String, Vec<Value>) {
        let sql = format!(
            "id = ${} AND worker = ${} AND started_us = ${} AND state = 'STARTED'",
            first,
            first + 1,
            first + 2
        );
        let values = vec![
            self.id.clone().into(),
            self.worker.clone().into(),
            self.started_us.into(),
        ];
        (sql, values)
    }
}

/// How an attempt ends, as the store records it.
#[derive(Debug, Clone)]
pub(crate) struct Finish {
    pub state: crate::State,
    pub result: Option<String>,
    pub error: Option<String>,
    /// For RETRY: when it may run again.
    pub run_at_us: Option<i64>,
    /// The attempt's last progress, if the task left it to be written with the outcome.
    pub progress: Option<(u64, u64, String)>,
}

/// Text a task wrote, made storable everywhere: PostgreSQL's TEXT cannot hold NUL, and a
/// message that can never be written would leave the workflow STARTED until its lease ran out.
fn printable(text: &str) -> String {
    text.replace('\0', "")
}

fn clamp_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// SQLite's outbox keeps events this long for slow readers.
const KEEP_EVENTS: Duration = Duration::from_secs(600);

impl Store {
    /// Takes up to `limit` due workflows of `kinds` for `worker`, highest priority and oldest
    /// first. On PostgreSQL, `SKIP LOCKED` lets many workers claim side by side without waiting
    /// on each other's rows; SQLite serialises writers, so the statement alone is atomic.
    pub(crate) async fn claim(
        &self,
        worker: &str,
        kinds: &[&str],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Workflow>, StoreError> {
        if limit == 0 || kinds.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_us();
        let kind_params: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 5)).collect();
        let lock = match self.backend() {
            DbBackend::Postgres => "FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let sql = format!(
            "UPDATE workflows SET state = 'STARTED', worker = $1, attempts = attempts + 1, \
             started_us = $2, lease_expires_us = $3, updated_us = $2, version = version + 1 \
             WHERE id IN (SELECT id FROM workflows \
               WHERE state IN ('PENDING', 'RETRY') AND run_at_us <= $2 AND kind IN ({}) \
               ORDER BY priority DESC, run_at_us, created_us LIMIT $4 {lock}) {returning}",
            kind_params.join(", "),
            returning = *super::RETURNING,
        );
        let mut values: Vec<Value> = vec![
            worker.into(),
            now.into(),
            now.saturating_add(micros(lease)).into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
        ];
        values.extend(kinds.iter().map(|k| Value::from(*k)));
        self.write_rows(self.statement(&sql, values)).await
    }

    /// Extends the leases of `held` — the attempts this worker is running, nothing else: a
    /// row left STARTED under this worker's name without a running attempt (a claim whose
    /// answer was lost, an outcome that could not be written) must expire and be reaped, not
    /// be kept alive forever. Returns the leases still held and whether a cancel was
    /// requested; a running attempt missing from the answer has lost its lease.
    pub(crate) async fn heartbeat(
        &self,
        worker: &str,
        held: &[Lease],
        lease: Duration,
    ) -> Result<Vec<(Lease, bool)>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = (0..held.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "UPDATE workflows SET lease_expires_us = $1 \
             WHERE worker = $2 AND state = 'STARTED' AND id IN ({}) \
             RETURNING id, started_us, cancel_requested",
            ids.join(", ")
        );
        let mut values: Vec<Value> =
            vec![now_us().saturating_add(micros(lease)).into(), worker.into()];
        values.extend(held.iter().map(|l| Value::from(l.id.clone())));
        let stmt = self.statement(&sql, values);
        let rows = self.writer.rows(stmt).await?;
        let mut held = Vec::with_capacity(rows.len());
        for row in rows {
            let lease = Lease {
                id: row.try_get("", "id")?,
                worker: worker.to_string(),
                started_us: row
                    .try_get::<Option<i64>>("", "started_us")?
                    .unwrap_or_default(),
            };
            held.push((lease, row.try_get("", "cancel_requested")?));
        }
        Ok(held)
    }

    /// Records progress. `false`: the lease is gone.
    pub(crate) async fn progress(
        &self,
        lease: &Lease,
        done: u64,
        total: u64,
        message: &str,
    ) -> Result<bool, StoreError> {
        let (fence, fence_values) = lease.fence(5);
        let sql = format!(
            "UPDATE workflows SET progress_done = $1, progress_total = $2, \
             progress_message = $3, updated_us = $4, version = version + 1 WHERE {fence}"
        );
        let mut values: Vec<Value> = vec![
            i64::try_from(done).unwrap_or(i64::MAX).into(),
            i64::try_from(total).unwrap_or(i64::MAX).into(),
            printable(message).into(),
            now_us().into(),
        ];
        values.extend(fence_values);
        self.fenced_write(&sql, values).await
    }

    /// Records the attempt's checkpoint. Not an event (the version stays), so a task may save
    /// one per step without waking every watcher.
    pub(crate) async fn checkpoint(&self, lease: &Lease, value: &str) -> Result<bool, StoreError> {
        let (fence, fence_values) = lease.fence(2);
        let sql = format!("UPDATE workflows SET checkpoint = $1 WHERE {fence}");
        let mut values: Vec<Value> = vec![value.into()];
        values.extend(fence_values);
        self.fenced_write(&sql, values).await
    }

    /// Ends an attempt. `false`: the lease was lost and nothing was written. A retry of an
    /// attempt whose workflow was cancelled meanwhile ends CANCELLED instead: the client was
    /// told it would stop.
    pub(crate) async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<bool, StoreError> {
        let now = now_us();
        let finished = finish.state.is_finished();
        let (fence, fence_values) = lease.fence(12);
        let stop = "($1 = 'RETRY' AND cancel_requested)";
        let sql = format!(
            "UPDATE workflows SET \
               state = CASE WHEN {stop} THEN 'CANCELLED' ELSE $1 END, \
               result = $2, error = $3, run_at_us = COALESCE($4, run_at_us), \
               progress_done = COALESCE($9, progress_done), \
               progress_total = COALESCE($10, progress_total), \
               progress_message = COALESCE($11, progress_message), \
               finished_us = CASE WHEN {stop} THEN $7 ELSE $5 END, \
               expires_us = CASE WHEN {stop} THEN $8 ELSE $6 END, \
               checkpoint = CASE WHEN $1 = 'SUCCESS' THEN NULL ELSE checkpoint END, \
               lease_expires_us = NULL, updated_us = $7, version = version + 1 WHERE {fence}"
        );
        let mut values: Vec<Value> = vec![
            finish.state.as_str().into(),
            finish.result.clone().into(),
            finish.error.as_deref().map(printable).into(),
            finish.run_at_us.into(),
            finished.then_some(now).into(),
            finished.then(|| self.expiry(now)).into(),
            now.into(),
            self.expiry(now).into(),
        ];
        let progress = finish.progress.as_ref();
        values.push(progress.map(|p| clamp_u64(p.0)).into());
        values.push(progress.map(|p| clamp_u64(p.1)).into());
        values.push(progress.map(|p| printable(&p.2)).into());
        values.extend(fence_values);
        self.fenced_write(&sql, values).await
    }

    /// Gives an unfinished attempt back (worker shutdown): PENDING again, the attempt not
    /// counted, runnable at once by any worker — or CANCELLED if a cancel was pending.
    pub(crate) async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        let (fence, fence_values) = lease.fence(3);
        let sql = format!(
            "UPDATE workflows SET \
               state = CASE WHEN cancel_requested THEN 'CANCELLED' ELSE 'PENDING' END, \
               finished_us = CASE WHEN cancel_requested THEN $1 ELSE NULL END, \
               expires_us = CASE WHEN cancel_requested THEN $2 ELSE NULL END, \
               attempts = attempts - 1, run_at_us = $1, \
               lease_expires_us = NULL, updated_us = $1, version = version + 1 WHERE {fence}"
        );
        let now = now_us();
        let mut values: Vec<Value> = vec![now.into(), self.expiry(now).into()];
        values.extend(fence_values);
        self.fenced_write(&sql, values).await
    }

    async fn fenced_write(&self, sql: &str, values: Vec<Value>) -> Result<bool, StoreError> {
        let changed = self.writer.count(self.statement(sql, values)).await?;
        Ok(changed == 1)
    }

    /// Takes back attempts whose worker stopped heartbeating: RETRY at once (the attempt
    /// counts), FAILURE when it was the last one, CANCELLED when a cancel was pending.
    /// Returns how many were taken back.
    pub(crate) async fn reap_expired(&self) -> Result<u64, StoreError> {
        let now = now_us();
        let lock = match self.backend() {
            DbBackend::Postgres => "FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let ends = "(cancel_requested OR attempts >= max_attempts)";
        let sql = format!(
            "UPDATE workflows SET \
               state = CASE WHEN cancel_requested THEN 'CANCELLED' \
                 WHEN attempts >= max_attempts THEN 'FAILURE' ELSE 'RETRY' END, \
               error = 'worker ' || COALESCE(worker, '?') || \
                 ' stopped heartbeating; its lease expired mid-attempt', \
               finished_us = CASE WHEN {ends} THEN $1 ELSE NULL END, \
               expires_us = CASE WHEN {ends} THEN $2 ELSE NULL END, \
               run_at_us = $1, lease_expires_us = NULL, updated_us = $1, version = version + 1 \
             WHERE id IN (SELECT id FROM workflows \
               WHERE state = 'STARTED' AND lease_expires_us < $1 LIMIT 100 {lock}) \
             RETURNING kind"
        );
        let stmt = self.statement(&sql, vec![now.into(), self.expiry(now).into()]);
        let rows = self.db.query_all_raw(stmt).await?;
        for row in &rows {
            let kind: String = row.try_get("", "kind")?;
            crate::metrics::metrics().lease_expired(&kind);
        }
        if !rows.is_empty() {
            self.wrote();
        }
        Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX))
    }

    /// Deletes finished workflows past their expiry (and, on SQLite, old outbox events).
    /// Workers do it every few minutes; `citadel workflows purge` on demand.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = now_us();
        let stmt = self.statement(
            "DELETE FROM workflows WHERE expires_us < $1",
            vec![now.into()],
        );
        let purged = self.db.execute_raw(stmt).await?.rows_affected();
        if self.backend() == DbBackend::Sqlite {
            let cutoff = now.saturating_sub(micros(KEEP_EVENTS));
            let stmt = self.statement(
                "DELETE FROM workflow_events WHERE at_us < $1",
                vec![cutoff.into()],
            );
            self.db.execute_raw(stmt).await?;
        }
        Ok(purged)
    }
}
