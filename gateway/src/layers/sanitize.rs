//! What the edge accepts of a request's head before anything else reads it: the caller's
//! `x-request-id` only when short and printable (otherwise it is dropped and a fresh one made),
//! and a URI of bounded length (414). Both travel into logs, spans and gRPC metadata, where
//! a 64 KB value once broke the edge's shared channel to the mesh for every caller.

use axum::{
    extract::Request,
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use citadel_proto::metadata::{REQUEST_ID, acceptable_request_id};

use crate::error::{ApiError, INVALID};

/// Longest path and query accepted.
const MAX_URI_BYTES: usize = 8 * 1024;

pub async fn sanitize(mut request: Request, next: Next) -> Response {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        let message = format!(
            "the request URI is {uri_len} bytes; this server accepts at most {MAX_URI_BYTES}"
        );
        let refused = ApiError::new(StatusCode::URI_TOO_LONG, INVALID, message);
        return refused.with_code("uri_too_long").into_response();
    }
    let headers = request.headers_mut();
    let mut ids = headers.get_all(REQUEST_ID).iter();
    let keep = match (ids.next(), ids.next()) {
        (Some(id), None) => acceptable_request_id(id.as_bytes()),
        (None, _) => true,
        // Which of several would the logs and the mesh see? None: make a fresh one.
        (Some(_), Some(_)) => false,
    };
    if !keep {
        headers.remove(REQUEST_ID);
    }
    next.run(request).await
}
