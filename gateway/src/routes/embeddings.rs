//! `POST /v1/embeddings`.

use axum::{http::HeaderMap, response::IntoResponse};

use crate::{
    cache_headers,
    error::ApiError,
    extract::Json,
    mesh_client::Mesh,
    openai::{EmbeddingsRequest, EmbeddingsResponse},
};

pub async fn create(
    state: Mesh,
    headers: HeaderMap,
    Json(body): Json<EmbeddingsRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (mut request, format) = body.into_proto()?;
    request.set_cache_policy(cache_headers::policy(&headers));
    let mut client = state.embeddings.clone();
    let response = state.call(client.embed(state.request(request))).await?;
    let hits = cache_headers::hits(response.cached);
    Ok((
        hits,
        axum::Json(EmbeddingsResponse::from_proto(response, format)),
    ))
}
