//! REST handlers. Each validates the JSON's shape, calls the mesh, converts the answer.

pub mod completions;
pub mod embeddings;
pub mod health;
pub mod models;
pub mod ollama;
pub mod operator;
pub mod vectors;
pub mod workflows;

use axum::http::{Method, StatusCode, Uri};

use crate::error::{ApiError, INVALID};

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        INVALID,
        format!("Unknown request URL: {method} {uri}"),
    )
    .with_code("unknown_url")
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let message = format!("{method} is not allowed on {uri}");
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, INVALID, message).with_code("method_not_allowed")
}
