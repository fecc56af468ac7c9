//! `GET /`: the operator page, compiled into the binary (nothing is loaded from the
//! internet). It holds no data: everything it shows comes over `/ws/orchestration`, which
//! the policy guards like every other door, and it asks for a key when the socket says 401.

use axum::{
    http::header,
    response::{IntoResponse, Response},
};

const PAGE: &str = include_str!("../../assets/operator.html");

pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // The page's own inline script and style only; the socket on the same origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
            ),
        ],
        PAGE,
    )
        .into_response()
}
