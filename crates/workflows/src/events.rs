//! The event feed: every state or progress change of any workflow, from any process, delivered
//! to this process's subscribers (Watch streams, the worker's wake-ups and cancel delivery).
//!
//! The database triggers publish the events (see `store/migration.rs`); this module reads them.
//! On PostgreSQL a LISTEN connection receives each NOTIFY; when that connection drops, the
//! reader catches up from the table itself (rows updated since the last event), so a database
//! restart delays events but does not lose them. On SQLite a tailer reads the outbox by sequence
//! number, woken at once by this process's writes and every few milliseconds for others'.
//! Delivery is at least once: subscribers dedupe on `(workflow_id, version)` where it matters.

use std::{sync::Arc, time::Duration};

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, Value,
    sqlx::postgres::PgListener,
};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::{
    Store, Workflow,
    store::{
        entity::{Column, Entity},
        migration::CHANNEL,
    },
};

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
                let mut listener = PgListener::connect_with(&pool)
                    .await
                    .map_err(|e| crate::StoreError::Unavailable(e.to_string()))?;
                listener
                    .listen(CHANNEL)
                    .await
                    .map_err(|e| crate::StoreError::Unavailable(e.to_string()))?;
                tokio::spawn(listen(listener, store.clone(), hub.clone()));
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

/// PostgreSQL: NOTIFY payloads; after a lost connection, the rows changed meanwhile.
async fn listen(mut listener: PgListener, store: Store, hub: EventHub) {
    let mut last_at = crate::now_us();
    loop {
        match listener.try_recv().await {
            Ok(Some(note)) => match serde_json::from_str::<WorkflowEvent>(note.payload()) {
                Ok(event) => {
                    last_at = last_at.max(event.at_us);
                    hub.publish(event);
                }
                Err(e) => tracing::warn!(error = %e, "unreadable workflow event"),
            },
            // The connection dropped; the next try_recv reconnects. Whatever was notified in
            // between is gone, so read it from the table once we are listening again.
            Ok(None) => {
                tracing::warn!("lost the workflow event connection; reconnecting");
                catch_up_after_reconnect(&mut listener, &store, &hub, &mut last_at).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "workflow event connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
                catch_up_after_reconnect(&mut listener, &store, &hub, &mut last_at).await;
            }
        }
    }
}

async fn catch_up_after_reconnect(
    listener: &mut PgListener,
    store: &Store,
    hub: &EventHub,
    last_at: &mut i64,
) {
    // Listening first, then reading: a change in between arrives twice, never not at all.
    loop {
        if listener.listen(CHANNEL).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Clocks of different writers differ a little: look a second further back.
    let since = last_at.saturating_sub(1_000_000);
    loop {
        let changed = Entity::find()
            .filter(Column::UpdatedUs.gte(since))
            .order_by_asc(Column::UpdatedUs)
            .all(&store.db)
            .await;
        match changed {
            Ok(rows) => {
                for row in rows {
                    *last_at = (*last_at).max(row.updated_us);
                    hub.publish(WorkflowEvent::of(&row));
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
            // Our own writes wake us at once; other processes' within TAIL_INTERVAL.
            let _ = tokio::time::timeout(TAIL_INTERVAL, store.written.notified()).await;
        }
    }
}
