//! `citadel worker`'s operations port (`workflows.worker_addr`). A worker serves no API, but an
//! operator must still scrape and probe it like `serve`: `GET /metrics` (its attempts, leases
//! and the queue census), `GET /health/` (liveness: the process answers), `GET /health/ready`
//! and `/health/detailed` (the workflow database answers or not), and `grpc.health.v1.Health`
//! on the same port (`""` and `citadel.v1.WorkflowService`). One listener, HTTP/1.1 and h2c,
//! under the same connection limits as the REST edge.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Json, Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use citadel_config::Config;
use citadel_telemetry::MetricsHandle;
use citadel_workflows::DatabaseState;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;

use crate::serve::{Running, connection_limits};

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone)]
struct Ops {
    metrics: MetricsHandle,
    database: watch::Receiver<DatabaseState>,
    concurrency: usize,
    started: Instant,
}

/// Binds `workflows.worker_addr` and serves it until drained.
pub async fn start(
    config: &Config,
    metrics: MetricsHandle,
    database: watch::Receiver<DatabaseState>,
    concurrency: usize,
    stopping: CancellationToken,
) -> anyhow::Result<(Running, SocketAddr)> {
    let listener: TcpListener =
        crate::serve::bind("workflows.worker_addr", config.workflows.worker_addr).await?;
    let addr = listener.local_addr()?;
    let grpc_health = citadel_grpc::worker_health(database.clone(), stopping);
    let ops = Arc::new(Ops {
        metrics,
        database,
        concurrency,
        started: Instant::now(),
    });
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health/", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/health/ready", get(ready))
        .route("/health/detailed", get(detailed))
        .route_service("/grpc.health.v1.Health/{*method}", grpc_health)
        .fallback(not_found)
        .with_state(ops);
    let limits = connection_limits(
        "workflows.worker_addr",
        &config.http.connections,
        config,
        false,
        (&None, &None),
    )?;
    let running = Running::spawn("worker ops", |stopped| async move {
        let stopped = async { stopped.await.unwrap_or_default() };
        Ok(citadel_conn::serve(listener, app, limits, stopped).await?)
    });
    Ok((running, addr))
}

type State = axum::extract::State<Arc<Ops>>;

async fn metrics_text(axum::extract::State(ops): State) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ops.metrics.render(),
    )
}

async fn ready(axum::extract::State(ops): State) -> impl IntoResponse {
    let database = ops.database.borrow().clone();
    match database.reachable {
        true => (StatusCode::OK, Json(json!({"status": "ok"}))),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "error": database.error})),
        ),
    }
}

async fn detailed(axum::extract::State(ops): State) -> impl IntoResponse {
    let database = ops.database.borrow().clone();
    let mut db: Value = json!({
        "service": "citadel.v1.WorkflowService",
        "backend": database.backend,
        "state": if database.reachable { "up" } else { "down" },
    });
    if !database.reachable {
        db["error"] = database.error.clone().into();
    }
    let (status, overall) = match database.reachable {
        true => (StatusCode::OK, "ok"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    let body = json!({
        "status": overall,
        "version": VERSION,
        "uptime_seconds": ops.started.elapsed().as_secs(),
        "components": {
            "database": db,
            "worker": {"concurrency": ops.concurrency},
        },
    });
    (status, Json(body))
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    let message = format!(
        "{} is not served on the worker's operations port (it serves /metrics, /health/, \
         /health/ready, /health/detailed and gRPC health)",
        uri.path()
    );
    (
        StatusCode::NOT_FOUND,
        Json(
            json!({"error": {"message": message, "type": "invalid_request_error",
            "param": null, "code": "not_found"}}),
        ),
    )
}
