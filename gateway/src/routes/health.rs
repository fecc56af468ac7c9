//! Liveness (`/health/`), readiness detail (`/health/detailed`) and `/metrics`.

use axum::{
    Json,
    http::{StatusCode, header},
    response::IntoResponse,
};
use citadel_auth::Permission;
use citadel_proto::v1;
use serde_json::{Value, json};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::{error::ApiError, mesh_client::Mesh, openai::ModelObject};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const EMBEDDING_SERVICE: &str = v1::embedding_service_server::SERVICE_NAME;
const VECTOR_SERVICE: &str = v1::vector_service_server::SERVICE_NAME;
const WORKFLOW_SERVICE: &str = v1::workflow_service_server::SERVICE_NAME;

/// The process is up and answering. Says nothing about the models: that is readiness.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Each component with its state; 200 when everything serves, 503 otherwise.
pub async fn detailed(state: Mesh) -> Result<impl IntoResponse, ApiError> {
    state
        .admit(Permission::HealthRead, "/health/detailed")
        .await?;
    let (serving, body) = report(&state).await;
    let status = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(body)))
}

/// The detailed health report (`/health/detailed`, the WebSocket's `health` topic) and
/// whether the mesh is serving.
pub(crate) async fn report(state: &Mesh) -> (bool, Value) {
    let service = grpc_health(state, EMBEDDING_SERVICE).await;
    let mut client = state.embeddings.clone();
    let (models, degraded) = match state
        .call(client.list_models(state.request(v1::ListModelsRequest {})))
        .await
    {
        Ok(list) => {
            let degraded = list
                .models
                .iter()
                .any(|m| m.state() != v1::ModelState::Ready);
            (
                list.models.into_iter().map(model_health).collect(),
                degraded,
            )
        }
        Err(e) => (
            vec![json!({"name": "models", "state": "unknown", "error": e.message})],
            true,
        ),
    };
    let cache = cache_health(state).await;
    let (llm, llm_degraded) = llm_health(state).await;
    let limits = state.policy.limiter_status();
    let limits_degraded = limits.degraded;
    // The vector store is its own service: down, it degrades the whole, it does not stop
    // embeddings.
    let vectors = grpc_health(state, VECTOR_SERVICE).await;
    let vectors_degraded = vectors != ServingStatus::Serving.as_str_name();
    // So is the workflow database: embeddings and completions go on without it.
    let workflows = grpc_health(state, WORKFLOW_SERVICE).await;
    let workflows_degraded = workflows != ServingStatus::Serving.as_str_name();
    let degraded = degraded
        || llm_degraded
        || workflows_degraded
        || limits_degraded
        || vectors_degraded
        || cache["l2"]["state"] == "degraded";
    let serving = service == ServingStatus::Serving.as_str_name();
    // Degraded still answers 200: the process serves, some model cannot right now, and a
    // load balancer pulling it would not bring that model's servers back.
    let overall = match (serving, degraded) {
        (false, _) => "unavailable",
        (true, true) => "degraded",
        (true, false) => "ok",
    };
    let body = json!({
        "status": overall,
        "version": VERSION,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "components": {
            "grpc": {"upstream": &*state.upstream, "service": EMBEDDING_SERVICE, "state": service, "version": VERSION},
            "models": models,
            "cache": cache,
            "llm": llm,
            "vectors": {"service": VECTOR_SERVICE, "state": vectors},
            "workflows": {"service": WORKFLOW_SERVICE, "state": workflows},
            "auth": {
                "mode": if state.policy.is_off() { "off" } else { "required" },
                "rate_limits": limits,
            },
        },
    });
    (serving, body)
}

async fn cache_health(state: &Mesh) -> Value {
    let mut client = state.embeddings.clone();
    let request = state.request(v1::GetCacheStatusRequest {});
    let status = match state.call(client.get_cache_status(request)).await {
        Ok(status) => status,
        Err(e) => return json!({"state": "unknown", "error": e.message}),
    };
    let level = |l: Option<v1::CacheLevel>| {
        let l = l.unwrap_or_default();
        let mut v = json!({"state": l.state, "hits": l.hits, "misses": l.misses,
            "errors": l.errors, "entries": l.entries, "bytes": l.bytes});
        if !l.last_error.is_empty() {
            v["last_error"] = l.last_error.into();
        }
        v
    };
    json!({
        "mode": status.mode,
        "hit_rate": status.hit_rate,
        "ttl_seconds": status.ttl_seconds,
        "l1": level(status.l1),
        "l2": level(status.l2),
    })
}

/// Each LLM server: breaker, requests in flight, the models it serves, its last error. One
/// that is failing makes the whole degraded, not unavailable: the others still serve.
async fn llm_health(state: &Mesh) -> (Value, bool) {
    let mut client = state.completions.clone();
    let request = state.request(v1::ListLlmModelsRequest {});
    let list = match state.call(client.list_models(request)).await {
        Ok(list) => list,
        Err(e) => return (json!({"state": "unknown", "error": e.message}), true),
    };
    let degraded = list.servers.iter().any(|s| s.breaker != "closed");
    let servers: Vec<Value> = list
        .servers
        .into_iter()
        .map(|s| {
            let mut v = json!({"name": s.name, "url": s.url, "breaker": s.breaker,
                "in_flight": s.in_flight, "models": s.models});
            if let Some(e) = s.last_error {
                v["last_error"] = e.into();
            }
            v
        })
        .collect();
    (json!({"servers": servers}), degraded)
}

async fn grpc_health(state: &Mesh, service: &str) -> String {
    let mut client = state.health.clone();
    let request = state.request(HealthCheckRequest {
        service: service.to_string(),
    });
    match state.call(client.check(request)).await {
        Ok(answer) => answer.status().as_str_name().to_string(),
        Err(e) => format!("UNREACHABLE: {}", e.message),
    }
}

fn model_health(model: v1::Model) -> Value {
    let endpoints: Vec<Value> = model.endpoints.iter().map(endpoint_health).collect();
    let (reason, fallback) = (model.state_reason.clone(), model.fallback.clone());
    let model = ModelObject::from(model);
    let mut entry = json!({
        "name": model.id,
        "backend": model.backend,
        "state": model.state,
        "dimensions": model.dimensions,
    });
    if !reason.is_empty() {
        entry["reason"] = reason.into();
    }
    if !fallback.is_empty() {
        entry["fallback"] = fallback.into();
    }
    if !endpoints.is_empty() {
        entry["endpoints"] = endpoints.into();
    }
    entry
}

fn endpoint_health(endpoint: &v1::Endpoint) -> Value {
    let breaker = match endpoint.breaker() {
        v1::BreakerState::Unspecified => "unknown",
        v1::BreakerState::Closed => "closed",
        v1::BreakerState::Open => "open",
        v1::BreakerState::HalfOpen => "half_open",
    };
    json!({
        "url": endpoint.url,
        "weight": endpoint.weight,
        "breaker": breaker,
        "outstanding": endpoint.outstanding,
        "consecutive_failures": endpoint.consecutive_failures,
        "last_error": (!endpoint.last_error.is_empty()).then_some(&endpoint.last_error),
        "latency_ms": endpoint.latency_us as f64 / 1000.0,
    })
}

pub async fn metrics(state: Mesh) -> Result<impl IntoResponse, ApiError> {
    if state.policy.protects_metrics() {
        state.admit(Permission::MetricsRead, "/metrics").await?;
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (state.metrics)(),
    ))
}
