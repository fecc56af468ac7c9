//! The subscriptions: `workflows` (its own snapshot, then a Watch shared with the principal's
//! other sockets, `share.rs`; a fresh snapshot after a lag), `health` and `models` (read every few seconds, sent when they change), and
//! `metrics` (a snapshot every `ws.metrics_interval_ms`).

use std::{collections::HashMap, time::Duration};

use axum::extract::ws::Utf8Bytes;

use citadel_proto::v1;
use serde_json::{Value, json};
use tokio::{
    sync::{broadcast, mpsc, watch},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use super::{
    WsSettings,
    share::{ShareKey, Shared, frame},
};
use crate::{
    error::{ApiError, workflow_error},
    layers::http_metrics::TRAFFIC,
    mesh_client::Mesh,
    routes::{health, models},
    workflows::WorkflowObject,
};

/// The same filter however it was written.
fn sorted(values: &[String]) -> Vec<String> {
    let mut values = values.to_vec();
    values.sort_unstable();
    values.dedup();
    values
}

/// How long a socket waits for a new share's Watch to open.
const SHARE_OPEN: Duration = Duration::from_secs(10);
/// How often `health` and `models` are read to find changes.
const POLL: Duration = Duration::from_secs(1);

type Out = mpsc::Sender<Utf8Bytes>;

fn text(message: &Value) -> Utf8Bytes {
    message.to_string().into()
}

pub(super) fn start(
    topic: &'static str,
    mesh: watch::Receiver<Mesh>,
    out: Out,
    settings: &WsSettings,
    principal: &str,
    ids: &[String],
    kinds: &[String],
) -> JoinHandle<()> {
    match topic {
        "workflows" => {
            let share = ShareKey {
                principal: principal.to_string(),
                kinds: sorted(kinds),
                ids: sorted(ids),
            };
            tokio::spawn(workflows(mesh, out, share, settings.clone()))
        }
        "health" => tokio::spawn(on_change(mesh, out, "health")),
        "models" => tokio::spawn(on_change(mesh, out, "models")),
        _ => tokio::spawn(metrics(mesh, out, settings.metrics_interval)),
    }
}

/// Workflow events: the socket's own snapshot, then the changes of the share it joined. A
/// socket too slow for the share is told how much it missed, then gets a fresh snapshot, so
/// it never shows a stale state for long.
async fn workflows(mesh: watch::Receiver<Mesh>, out: Out, share: ShareKey, settings: WsSettings) {
    loop {
        let handle = mesh.borrow().clone();
        let shares = handle.realtime.shares.clone();
        let (mut changes, mut live) = shares.join(share.clone(), &handle, settings.feed_buffer);
        // The share's Watch must be open before the snapshot is read, or a change could fall
        // between the two.
        if tokio::time::timeout(SHARE_OPEN, live.wait_for(|open| *open))
            .await
            .is_err()
        {
            let e = ApiError::from(tonic::Status::unavailable("the workflow feed did not open"));
            let _ = out.send(text(&super::protocol::error(None, &e))).await;
            return;
        }
        let shown = match snapshot(&handle, &share, &out).await {
            Ok(Some(shown)) => {
                // From here on the socket has the current state and every change after it.
                let synced =
                    json!({"type": "synced", "topic": "workflows", "snapshot": shown.len()});
                if out.send(text(&synced)).await.is_err() {
                    return;
                }
                shown
            }
            Ok(None) => return, // the socket is gone
            Err(e) => {
                let _ = out.send(text(&super::protocol::error(None, &e))).await;
                return;
            }
        };
        if !forward(&mut changes, shown, &out).await {
            return;
        }
    }
}

/// The matching workflows now, sent marked `snapshot`; their versions, to drop the share's
/// older changes. `None`: the socket is gone.
async fn snapshot(
    mesh: &Mesh,
    share: &ShareKey,
    out: &Out,
) -> Result<Option<HashMap<String, u64>>, ApiError> {
    let request = v1::WatchWorkflowsRequest {
        ids: share.ids.clone(),
        kinds: share.kinds.clone(),
        snapshot: true,
        snapshot_only: true,
        records: true,
        ..Default::default()
    };
    let mut client = mesh.workflows.clone();
    let call = client.watch(mesh.stream_request(request));
    let mut stream = mesh
        .call_mapped(call, "workflow service", workflow_error)
        .await?;
    let mut shown = HashMap::new();
    while let Some(event) = stream.message().await.map_err(workflow_error)? {
        let Some(workflow) = event.workflow else {
            continue;
        };
        shown.insert(workflow.id.clone(), event.version);
        if out
            .send(frame(WorkflowObject::from(workflow), true))
            .await
            .is_err()
        {
            return Ok(None);
        }
    }
    Ok(Some(shown))
}

/// The share's changes to this socket until it lags (`true`: take a fresh snapshot) or is
/// gone (`false`).
async fn forward(
    changes: &mut broadcast::Receiver<Shared>,
    mut shown: HashMap<String, u64>,
    out: &Out,
) -> bool {
    loop {
        let missed = match changes.recv().await {
            Ok(Shared::Change { id, version, frame }) => {
                // Already in the snapshot: a repeat.
                if shown.remove(&*id).is_some_and(|seen| seen >= version) {
                    continue;
                }
                if out.send(frame).await.is_err() {
                    return false;
                }
                continue;
            }
            Ok(Shared::Lagged(missed)) => missed,
            Err(broadcast::error::RecvError::Lagged(missed)) => missed,
            Ok(Shared::Ended(frame)) => {
                let _ = out.send(frame).await;
                return false;
            }
            Err(broadcast::error::RecvError::Closed) => return false,
        };
        let lagged = json!({"type": "lagged", "missed": missed});
        return out.send(text(&lagged)).await.is_ok();
    }
}

/// `health` or `models`: read every second, sent when it changed.
async fn on_change(mesh: watch::Receiver<Mesh>, out: Out, topic: &'static str) {
    let mut last: Option<Value> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let handle = mesh.borrow().clone();
        let (message, compared) = match topic {
            "health" => {
                let (_, report) = health::report(&handle).await;
                let mut same = report.clone();
                // Uptime changes every second; it alone is no news.
                if let Some(o) = same.as_object_mut() {
                    o.remove("uptime_seconds");
                }
                (json!({"type": "health", "health": report}), same)
            }
            _ => match models::entries(&handle).await {
                Ok(list) => {
                    let data = serde_json::to_value(&list.data).unwrap_or(Value::Null);
                    (json!({"type": "models", "data": data}), data)
                }
                Err(e) => {
                    let e = super::protocol::error(None, &e);
                    (e.clone(), e)
                }
            },
        };
        if last.as_ref() == Some(&compared) {
            continue;
        }
        // A full queue skips this reading; the next change goes out.
        match out.try_send(text(&message)) {
            Ok(()) => last = Some(compared),
            Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// A snapshot of this process every `interval`: request rate and mean latency at the edge,
/// the cache's hit rate, open streams, and the workflow queue.
async fn metrics(mesh: watch::Receiver<Mesh>, out: Out, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut requests, mut latency_us) = TRAFFIC.totals();
    let mut since = Instant::now();
    loop {
        tick.tick().await;
        let handle = mesh.borrow().clone();
        let (now_requests, now_latency) = TRAFFIC.totals();
        let elapsed = since.elapsed().as_secs_f64().max(1e-3);
        let served = now_requests.saturating_sub(requests);
        let mean_ms = (served > 0)
            .then(|| now_latency.saturating_sub(latency_us) as f64 / served as f64 / 1_000.0);
        (requests, latency_us, since) = (now_requests, now_latency, Instant::now());
        let mut cache = handle.embeddings.clone();
        let cache = handle
            .call(cache.get_cache_status(handle.request(v1::GetCacheStatusRequest {})))
            .await
            .map(|c| c.hit_rate)
            .ok();
        let mut workflows = handle.workflows.clone();
        let call = workflows.get_queue_depth(handle.request(v1::GetQueueDepthRequest::default()));
        let queue = handle
            .call_mapped(call, "workflow service", crate::error::workflow_error)
            .await
            .ok();
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let snapshot = json!({
            "type": "metrics",
            "at_ms": at_ms,
            "requests_per_second": served as f64 / elapsed,
            "latency_ms_mean": mean_ms,
            "cache_hit_rate": cache,
            "active_streams": handle.realtime.streams.open.len(),
            "workflows": queue.map(|q| json!({"pending": q.pending, "running": q.started,
                "retry": q.retry})),
        });
        match out.try_send(text(&snapshot)) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
