//! A column added to `workflows` while this store's connections hold the old schema (a newer
//! release migrating beside one still serving, or this process's own migrations with a
//! connection opened part-way): every statement that returns rows still reads them. With
//! `RETURNING *` sqlx's worker thread panicked here ("index out of bounds: the len is N but
//! the index is N") and the claim's workflow never ran.

use std::time::Duration;

use sea_orm::ConnectionTrait;

use super::{CancelOutcome, Store};
use crate::{NewWorkflow, RetryPolicy};

fn new(kind: &str) -> NewWorkflow {
    NewWorkflow {
        kind: kind.to_string(),
        params: serde_json::json!({}),
        idempotency_key: None,
        priority: 0,
        not_before_us: None,
        time_limit_ms: 60_000,
        retry: RetryPolicy {
            max_attempts: 1,
            initial_backoff_ms: 10,
            max_backoff_ms: 10,
        },
        owner: None,
        trace_context: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_read_after_another_connection_adds_a_column() {
    let dir = std::env::temp_dir().join(format!("citadel-schema-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("w.db").display());
    let ttl = Duration::from_secs(60);
    let serving = Store::connect(&url, ttl, 4).await.unwrap();
    // Every connection of the serving store reads the schema as it is now.
    for _ in 0..4 {
        serving.submit(&new("noop")).await.unwrap();
    }

    let migrating = Store::connect(&url, ttl, 1).await.unwrap();
    migrating
        .db
        .execute_unprepared("ALTER TABLE workflows ADD COLUMN added_by_a_newer_release TEXT")
        .await
        .unwrap();

    // Each statement that returns rows, on connections that have not seen the new column.
    for _ in 0..4 {
        serving.submit(&new("noop")).await.unwrap();
    }
    let claimed = serving
        .claim("w", &["noop"], 3, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let (queued, _) = serving.submit(&new("noop")).await.unwrap();
    let cancelled = match serving.cancel(&queued.id).await.unwrap() {
        CancelOutcome::Cancelled(w) => w,
        CancelOutcome::Requested(w) => panic!("{} was queued, not running", w.id),
    };
    assert_eq!(cancelled.state, "CANCELLED");
    let requested = serving.cancel(&claimed[0].id).await.unwrap();
    assert!(matches!(requested, CancelOutcome::Requested(_)));
    let retried = serving.retry(&queued.id, None).await.unwrap();
    assert_eq!(retried.state, "PENDING");
    let _ = std::fs::remove_dir_all(&dir);
}
