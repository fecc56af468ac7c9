//! `GET /v1/models` and `GET /v1/models/{id}` (ids may contain `/`, as in
//! `sentence-transformers/all-MiniLM-L6-v2`).

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
    http::HeaderMap,
};
use citadel_proto::v1;

use crate::{
    error::ApiError,
    openai::{ModelList, ModelObject},
    state::AppState,
};

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ModelList>, ApiError> {
    let mut client = state.embeddings.clone();
    let models = state
        .call(client.list_models(state.request(v1::ListModelsRequest {}, &headers)))
        .await?;
    let data = models.models.into_iter().map(ModelObject::from).collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}

pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ModelObject>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::invalid("model", e.body_text()))?;
    let mut client = state.embeddings.clone();
    let model = state
        .call(client.get_model(state.request(v1::GetModelRequest { model: id }, &headers)))
        .await?;
    Ok(Json(ModelObject::from(model)))
}
