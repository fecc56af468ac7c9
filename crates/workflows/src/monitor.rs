//! The queue monitor: every process connected to the workflow database asks it, every few
//! seconds, how many workflows wait or run (by state and kind) and how long the oldest due one
//! has waited. The same query is the database's health probe: its answer (or its failure) is
//! what `/health/detailed`, gRPC health (`citadel.v1.WorkflowService`) and the
//! `citadel_workflows_database_up` gauge report. One query per interval, over the partial
//! indexes on unfinished states, so it costs the same however many finished rows the table
//! holds.

use std::{collections::BTreeSet, time::Duration};

use sea_orm::{ConnectionTrait, DbBackend};
use tokio::{sync::watch, task::JoinHandle};

use crate::{Store, StoreError, metrics::metrics, now_us};

/// What the last probe of the workflow database found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseState {
    pub reachable: bool,
    /// `postgres` or `sqlite`.
    pub backend: &'static str,
    /// Why the last probe failed; empty while reachable.
    pub error: String,
}

/// A probe that takes longer than this counts as a failure: a hung database is down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One row of the queue's census.
struct Census {
    state: String,
    kind: String,
    count: u64,
    /// Earliest `run_at_us` among the due PENDING/RETRY rows, when there is one.
    oldest_due_us: Option<i64>,
}

impl Store {
    /// Starts probing every `interval`; the receiver follows the database's state. The first
    /// state is "reachable": `Store::connect` has just succeeded.
    pub fn monitor(&self, interval: Duration) -> (watch::Receiver<DatabaseState>, JoinHandle<()>) {
        let backend = backend_name(self.backend());
        let (tx, rx) = watch::channel(DatabaseState {
            reachable: true,
            backend,
            error: String::new(),
        });
        let store = self.clone();
        let task = tokio::spawn(async move {
            // Every (state, kind) once reported: one that empties must read 0, not its last
            // count.
            let mut seen = BTreeSet::new();
            loop {
                let result = match tokio::time::timeout(PROBE_TIMEOUT, store.census()).await {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Unavailable(format!(
                        "no answer within {} s",
                        PROBE_TIMEOUT.as_secs()
                    ))),
                };
                let state = match result {
                    Ok(rows) => {
                        publish(&rows, &mut seen);
                        DatabaseState {
                            reachable: true,
                            backend,
                            error: String::new(),
                        }
                    }
                    Err(e) => DatabaseState {
                        reachable: false,
                        backend,
                        error: e.to_string(),
                    },
                };
                metrics().database_up(state.reachable);
                tx.send_if_modified(|old| {
                    if *old == state {
                        return false;
                    }
                    match state.reachable {
                        true => tracing::info!(backend, "the workflow database answers again"),
                        false => tracing::warn!(backend, error = %state.error,
                            "the workflow database does not answer"),
                    }
                    *old = state;
                    true
                });
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        });
        (rx, task)
    }

    async fn census(&self) -> Result<Vec<Census>, StoreError> {
        let sql = "SELECT state, kind, COUNT(*) AS n, \
             MIN(CASE WHEN state <> 'STARTED' AND run_at_us <= $1 THEN run_at_us END) AS oldest \
             FROM workflows WHERE state IN ('PENDING', 'STARTED', 'RETRY') \
             GROUP BY state, kind";
        let rows = self
            .db
            .query_all_raw(self.statement(sql, vec![now_us().into()]))
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Census {
                    state: row.try_get("", "state")?,
                    kind: row.try_get("", "kind")?,
                    count: u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0),
                    oldest_due_us: row.try_get::<Option<i64>>("", "oldest")?,
                })
            })
            .collect()
    }
}

fn publish(rows: &[Census], seen: &mut BTreeSet<(String, String)>) {
    let now = now_us();
    let mut zero: BTreeSet<(String, String)> = seen.clone();
    let mut oldest_by_kind = std::collections::BTreeMap::<&str, i64>::new();
    for row in rows {
        let key = (row.state.clone(), row.kind.clone());
        zero.remove(&key);
        metrics().queue_depth(&row.state, &row.kind, row.count);
        seen.insert(key);
        if let Some(at) = row.oldest_due_us {
            let oldest = oldest_by_kind.entry(&row.kind).or_insert(at);
            *oldest = (*oldest).min(at);
        }
    }
    for (state, kind) in &zero {
        metrics().queue_depth(state, kind, 0);
    }
    // Every kind seen has an age: 0 once nothing of it waits.
    let kinds: BTreeSet<&str> = seen.iter().map(|(_, kind)| kind.as_str()).collect();
    for kind in kinds {
        let age_us = oldest_by_kind
            .get(kind)
            .map_or(0, |at| now.saturating_sub(*at));
        #[allow(clippy::cast_precision_loss)]
        metrics().oldest_pending_age(kind, age_us.max(0) as f64 / 1e6);
    }
}

fn backend_name(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "postgres",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    }
}
