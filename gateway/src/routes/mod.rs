//! REST handlers. Each validates the JSON's shape, calls the mesh, converts the answer.

pub mod embeddings;
pub mod health;
pub mod models;

use axum::http::{Method, StatusCode, Uri};

use crate::error::ApiError;

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("Unknown request URL: {method} {uri}"),
    )
    .with_code("unknown_url")
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let message = format!("{method} is not allowed on {uri}");
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        message,
    )
    .with_code("method_not_allowed")
}
