//! Ollama's REST API, the part embedding tools use: `POST /api/embed`, `POST /api/embeddings`
//! (legacy), `GET /api/tags` and `GET /api/version`, so a tool built for Ollama can point at
//! Citadel unchanged. Each handler is the same gRPC call as its OpenAI twin; errors leave in
//! Ollama's `{"error": "..."}` body with the status the OpenAI routes would give.

use axum::{Json, http::HeaderMap};
use citadel_proto::v1;
use serde_json::{Value, json};

use crate::{
    cache_headers::{self, CacheHits},
    error::ApiError,
    extract,
    mesh_client::Mesh,
    ollama::{
        EmbedRequest, EmbedResponse, EmbeddingsRequest, EmbeddingsResponse, OllamaError, Tag,
        TagList,
    },
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The body extractor: `Result` so a malformed body's `ApiError` (400, 413, 415) can be
/// re-dressed as an `OllamaError` by `?`, with the status decided in one place.
type Body<T> = Result<extract::Json<T>, ApiError>;

pub async fn embed(
    state: Mesh,
    headers: HeaderMap,
    body: Body<EmbedRequest>,
) -> Result<(CacheHits, Json<EmbedResponse>), OllamaError> {
    let extract::Json(body) = body?;
    let mut request = body.into_proto()?;
    request.set_cache_policy(cache_headers::policy(&headers));
    let requested = request.model.clone();
    let mut client = state.embeddings.clone();
    let response = state.call(client.embed(state.request(request))).await?;
    let hits = cache_headers::hits(response.cached);
    Ok((hits, Json(EmbedResponse::from_proto(response, requested))))
}

pub async fn embeddings(
    state: Mesh,
    body: Body<EmbeddingsRequest>,
) -> Result<Json<EmbeddingsResponse>, OllamaError> {
    let extract::Json(body) = body?;
    let request = body.into_proto()?;
    let mut client = state.embeddings.clone();
    let response = state.call(client.embed(state.request(request))).await?;
    Ok(Json(EmbeddingsResponse::from(response)))
}

pub async fn tags(state: Mesh) -> Result<Json<TagList>, OllamaError> {
    let mut client = state.embeddings.clone();
    let list = state
        .call(client.list_models(state.request(v1::ListModelsRequest {})))
        .await?;
    let models = list.models.into_iter().map(Tag::from).collect();
    Ok(Json(TagList { models }))
}

/// Citadel's own version: tools only check that the server answers like Ollama.
pub async fn version() -> Json<Value> {
    Json(json!({"version": VERSION}))
}
