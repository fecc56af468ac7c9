//! The event feed: every state or progress change of any workflow, from any process, delivered
//! to this process's subscribers (Watch streams, the worker's wake-ups and cancel delivery).
//!
//! The database triggers publish the events (see `store/migration.rs`); this module reads them.
//! On PostgreSQL a LISTEN connection receives each NOTIFY; when that connection fails or stops
//! answering a ping, a new one is made and the reader catches up from the table itself (rows
//! updated since shortly before the last event), so a database restart delays events but does
//! not lose them. On SQLite a tailer reads the outbox by sequence
//! number, woken at once by this process's writes and every few milliseconds for others'.
//! Delivery is at least once: subscribers dedupe on `(workflow_id, version)` where it matters.

use std::{sync::Arc, time::Duration};

use sea_orm::{
    ConnectionTrait, DbBackend, Value,
    sqlx::postgres::{PgListener, PgPool},
};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::{Store, Workflow, store::migration::CHANNEL};

/// One change of one workflow, as the triggers publish it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WorkflowEvent {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    pub done: i64,
    pub total: i64,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// `true`/`false` from PostgreSQL, `1`/`0` from SQLite.
    #[serde(deserialize_with = "flag")]
    pub cancel_requested: bool,
    #[serde(default)]
    pub worker: Option<String>,
    pub at_us: i64,
    pub version: i64,
    /// Who submitted it; `None` with auth off.
    #[serde(default)]
    pub owner: Option<String>,
}

impl WorkflowEvent {
    /// The event a workflow's current row stands for (Watch's first message, catch-up).
    pub fn of(w: &Workflow) -> WorkflowEvent {
        WorkflowEvent {
            id: w.id.clone(),
            kind: w.kind.clone(),
            state: w.state.clone(),
            attempts: i64::from(w.attempts),
            done: w.progress_done,
            total: w.progress_total,
            message: Some(w.progress_message.clone()),
            error: w.error.clone(),
            cancel_requested: w.cancel_requested,
            worker: w.worker.clone(),
            at_us: w.updated_us,
            version: w.version,
            owner: w.owner.clone(),
        }
    }
}

fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
        _ => false,
    })
}

/// Fans events out to this process's subscribers. A subscriber that falls more than
/// `CAPACITY` events behind is told so (`RecvError::Lagged`) and must re-read what it needs.
#[derive(Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Arc<WorkflowEvent>>,
}

const CAPACITY: usize = 16_384;
/// How often the SQLite tailer looks for other processes' events.
const TAIL_INTERVAL: Duration = Duration::from_millis(10);
/// Shortest time between two outbox reads.
const TAIL_GAP: Duration = Duration::from_millis(2);
/// Events read per outbox query.
const TAIL_BATCH: i64 = 1_000;

impl EventHub {
    /// Starts reading `store`'s events in the background for as long as the runtime runs.
    pub async fn start(store: &Store) -> Result<EventHub, crate::StoreError> {
        let (sender, _) = broadcast::channel(CAPACITY);
        let hub = EventHub { sender };
        match store.backend() {
            DbBackend::Postgres => {
                let pool = store.db.get_postgres_connection_pool().clone();
                let listener = connect_listener(&pool)
                    .await
                    .map_err(|e| crate::StoreError::Unavailable(e.to_string()))?;
                tokio::spawn(listen(listener, pool, store.clone(), hub.clone()));
            }
            _ => {
                let start = last_seq(store).await?;
                tokio::spawn(tail(store.clone(), hub.clone(), start));
            }
        }
        Ok(hub)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WorkflowEvent>> {
        self.sender.subscribe()
    }

    fn publish(&self, event: WorkflowEvent) {
        // No subscriber is fine: nobody is watching.
        let _ = self.sender.send(Arc::new(event));
    }
}

/// Silence after which the LISTEN connection is proven alive with a ping of our own: a
/// half-open connection (a NAT or proxy timeout, a failover) would otherwise wait forever.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Pings carry no event; any notification proves the connection alive.
const PING_CHANNEL: &str = "citadel_workflows_ping";
/// How far back the catch-up after a reconnect reads: writers stamp `updated_us` before they
/// commit (a pool wait, a row lock), and clocks differ between machines. Repeats are fine.
const CATCH_UP_MARGIN_US: i64 = 10_000_000;

async fn connect_listener(pool: &PgPool) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([CHANNEL, PING_CHANNEL]).await?;
    Ok(listener)
}

/// PostgreSQL: NOTIFY payloads. Any failure (or a ping that never comes back) drops the
/// connection; a new one is made, then the rows changed meanwhile are read from the table.
async fn listen(first: PgListener, pool: PgPool, store: Store, hub: EventHub) {
    let mut listener = Some(first);
    let mut last_at = crate::now_us();
    let mut ping_sent = false;
    loop {
        let Some(connection) = listener.as_mut() else {
            match connect_listener(&pool).await {
                Ok(fresh) => {
                    listener = Some(fresh);
                    ping_sent = false;
                    catch_up(&store, &hub, &mut last_at).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reconnect the workflow event feed yet");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            continue;
        };
        match tokio::time::timeout(IDLE_CHECK, connection.try_recv()).await {
            Ok(Ok(Some(note))) => {
                ping_sent = false;
                if note.channel() == PING_CHANNEL {
                    continue;
                }
                match serde_json::from_str::<WorkflowEvent>(note.payload()) {
                    Ok(event) => {
                        last_at = last_at.max(event.at_us).min(crate::now_us());
                        hub.publish(event);
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable workflow event"),
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                tracing::warn!("lost the workflow event connection; reconnecting");
                listener = None;
            }
            Err(_) if ping_sent => {
                tracing::warn!("the workflow event connection stopped answering; reconnecting");
                listener = None;
            }
            Err(_) => {
                let ping =
                    store.statement("SELECT pg_notify($1, '')", vec![Value::from(PING_CHANNEL)]);
                ping_sent = store.db.execute_raw(ping).await.is_ok();
            }
        }
    }
}

/// Publishes the current state of every row changed since shortly before `last_at`.
async fn catch_up(store: &Store, hub: &EventHub, last_at: &mut i64) {
    let since = last_at.saturating_sub(CATCH_UP_MARGIN_US);
    loop {
        let stmt = store.statement(
            "SELECT id, kind, state, attempts, progress_done, progress_total, progress_message, \
             error, cancel_requested, worker, updated_us, version, owner FROM workflows \
             WHERE updated_us >= $1 ORDER BY updated_us", // a scan, once per reconnect
            vec![Value::from(since)],
        );
        match store.db.query_all_raw(stmt).await {
            Ok(rows) => {
                for row in rows {
                    match event_of_row(&row) {
                        Ok(event) => {
                            *last_at = (*last_at).max(event.at_us).min(crate::now_us());
                            hub.publish(event);
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable workflow row"),
                    }
                }
                tracing::info!("workflow events resumed");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot catch up on workflow events yet");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

fn event_of_row(row: &sea_orm::QueryResult) -> Result<WorkflowEvent, sea_orm::DbErr> {
    Ok(WorkflowEvent {
        id: row.try_get("", "id")?,
        kind: row.try_get("", "kind")?,
        state: row.try_get("", "state")?,
        attempts: i64::from(row.try_get::<i32>("", "attempts")?),
        done: row.try_get("", "progress_done")?,
        total: row.try_get("", "progress_total")?,
        message: row.try_get("", "progress_message")?,
        error: row.try_get("", "error")?,
        cancel_requested: row.try_get("", "cancel_requested")?,
        worker: row.try_get("", "worker")?,
        at_us: row.try_get("", "updated_us")?,
        version: row.try_get("", "version")?,
        owner: row.try_get("", "owner")?,
    })
}

async fn last_seq(store: &Store) -> Result<i64, crate::StoreError> {
    let stmt = store.statement(
        "SELECT COALESCE(MAX(seq), 0) AS seq FROM workflow_events",
        vec![],
    );
    let row = store.db.query_one_raw(stmt).await?;
    Ok(match row {
        Some(row) => row.try_get("", "seq")?,
        None => 0,
    })
}

/// SQLite: the outbox, in sequence order.
async fn tail(store: Store, hub: EventHub, mut seq: i64) {
    loop {
        let stmt = store.statement(
            "SELECT seq, payload FROM workflow_events WHERE seq > $1 ORDER BY seq LIMIT $2",
            vec![Value::from(seq), Value::from(TAIL_BATCH)],
        );
        let rows = match store.db.query_all_raw(stmt).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read workflow events");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let full = rows.len() as i64 == TAIL_BATCH;
        let found = !rows.is_empty();
        for row in rows {
            let (Ok(next), Ok(payload)) = (
                row.try_get::<i64>("", "seq"),
                row.try_get::<String>("", "payload"),
            ) else {
                continue;
            };
            seq = next;
            match serde_json::from_str::<WorkflowEvent>(&payload) {
                Ok(event) => hub.publish(event),
                Err(e) => tracing::warn!(error = %e, "unreadable workflow event"),
            }
        }
        if !full {
            // Busy (this read found events): the next read waits TAIL_GAP, so a burst of
            // commits costs one read, not one each. Idle: our own writes wake us at once,
            // other processes' within TAIL_INTERVAL.
            if found {
                tokio::time::sleep(TAIL_GAP).await;
            } else {
                let _ = tokio::time::timeout(TAIL_INTERVAL, store.written.notified()).await;
            }
        }
    }
}
