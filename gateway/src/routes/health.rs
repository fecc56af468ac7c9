//! Liveness (`/health/`), readiness detail (`/health/detailed`) and `/metrics`.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};
use citadel_proto::v1;
use serde_json::{Value, json};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::{openai::ModelObject, state::AppState};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const EMBEDDING_SERVICE: &str = v1::embedding_service_server::SERVICE_NAME;

/// The process is up and answering. Says nothing about the models: that is readiness.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Each component with its state; 200 when everything serves, 503 otherwise.
pub async fn detailed(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let service = grpc_health(&state, &headers, EMBEDDING_SERVICE).await;
    let mut client = state.embeddings.clone();
    let models = match state
        .call(client.list_models(state.request(v1::ListModelsRequest {}, &headers)))
        .await
    {
        Ok(list) => list.models.into_iter().map(model_health).collect(),
        Err(e) => vec![json!({"name": "models", "state": "unknown", "error": e.message})],
    };
    let serving = service == ServingStatus::Serving.as_str_name();
    let body = json!({
        "status": if serving { "ok" } else { "unavailable" },
        "version": VERSION,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "components": {
            "grpc": {"upstream": &*state.upstream, "service": EMBEDDING_SERVICE, "state": service, "version": VERSION},
            "models": models,
        },
    });
    let status = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn grpc_health(state: &AppState, headers: &HeaderMap, service: &str) -> String {
    let mut client = state.health.clone();
    let request = state.request(
        HealthCheckRequest {
            service: service.to_string(),
        },
        headers,
    );
    match state.call(client.check(request)).await {
        Ok(answer) => answer.status().as_str_name().to_string(),
        Err(e) => format!("UNREACHABLE: {}", e.message),
    }
}

fn model_health(model: v1::Model) -> Value {
    let model = ModelObject::from(model);
    json!({
        "name": model.id,
        "backend": model.backend,
        "state": model.state,
        "dimensions": model.dimensions,
    })
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (state.metrics)(),
    )
}
