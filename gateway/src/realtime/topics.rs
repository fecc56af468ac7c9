//! The polled subscriptions, each a task beside the socket that hands its frames to the
//! socket's queue: `health` and `models` (read every second, sent when they change) and
//! `metrics` (a snapshot every `ws.metrics_interval_ms`). `workflows` is `workflow_topic.rs`.

use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use citadel_proto::v1;
use serde_json::{Value, json};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use super::WsSettings;
use crate::{
    layers::http_metrics::TRAFFIC,
    mesh_client::Mesh,
    routes::{health, models},
};

/// How often `health` and `models` are read to find changes.
const POLL: Duration = Duration::from_secs(1);

type Out = mpsc::Sender<Utf8Bytes>;

fn text(message: &Value) -> Utf8Bytes {
    message.to_string().into()
}

/// Starts `health`, `models` or `metrics`.
pub(super) fn start(
    topic: &'static str,
    mesh: watch::Receiver<Mesh>,
    out: Out,
    settings: &WsSettings,
) -> JoinHandle<()> {
    match topic {
        "health" => tokio::spawn(on_change(mesh, out, "health")),
        "models" => tokio::spawn(on_change(mesh, out, "models")),
        _ => tokio::spawn(metrics(mesh, out, settings.metrics_interval)),
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
