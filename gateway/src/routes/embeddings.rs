//! `POST /v1/embeddings`.

use axum::{extract::State, http::HeaderMap, response::IntoResponse};

use crate::{
    error::ApiError,
    extract::Json,
    openai::{EmbeddingsRequest, EmbeddingsResponse},
    state::AppState,
};

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<EmbeddingsRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (request, format) = body.into_proto()?;
    let mut client = state.embeddings.clone();
    let response = state
        .call(client.embed(state.request(request, &headers)))
        .await?;
    Ok(axum::Json(EmbeddingsResponse::from_proto(response, format)))
}
