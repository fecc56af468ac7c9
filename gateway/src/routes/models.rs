//! `GET /v1/models` and `GET /v1/models/{id}` (ids may contain `/`, as in
//! `sentence-transformers/all-MiniLM-L6-v2`).

use axum::{
    Json,
    extract::{Path, rejection::PathRejection},
};
use citadel_proto::v1;

use crate::{
    error::ApiError,
    mesh_client::Mesh,
    openai::{LlmModelObject, ModelEntry, ModelList, ModelObject},
};

pub async fn list(state: Mesh) -> Result<Json<ModelList>, ApiError> {
    entries(&state).await.map(Json)
}

/// Every model the mesh serves: embedding models, then LLM models.
pub(crate) async fn entries(state: &Mesh) -> Result<ModelList, ApiError> {
    let mut client = state.embeddings.clone();
    let models = state
        .call(client.list_models(state.request(v1::ListModelsRequest {})))
        .await?;
    let mut data: Vec<ModelEntry> = models
        .models
        .into_iter()
        .map(|m| ModelEntry::Embedding(ModelObject::from(m)))
        .collect();
    let mut llm = state.completions.clone();
    let request = state.request(v1::ListLlmModelsRequest {});
    let served = state.call(llm.list_models(request)).await?;
    data.extend(
        served
            .models
            .into_iter()
            .map(|m| ModelEntry::Llm(LlmModelObject::from(m))),
    );
    Ok(ModelList {
        object: "list",
        data,
    })
}

/// An embedding model, else an LLM model (or alias) of that name.
pub async fn get(
    state: Mesh,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ModelEntry>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::invalid("model", e.body_text()))?;
    let mut client = state.embeddings.clone();
    let request = state.request(v1::GetModelRequest { model: id.clone() });
    let not_found = match state.call(client.get_model(request)).await {
        Ok(model) => return Ok(Json(ModelEntry::Embedding(ModelObject::from(model)))),
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => e,
        Err(e) => return Err(e),
    };
    let mut llm = state.completions.clone();
    let request = state.request(v1::ListLlmModelsRequest {});
    let served = state.call(llm.list_models(request)).await?;
    match served.models.into_iter().find(|m| m.id == id) {
        Some(m) => Ok(Json(ModelEntry::Llm(LlmModelObject::from(m)))),
        None => Err(not_found),
    }
}
