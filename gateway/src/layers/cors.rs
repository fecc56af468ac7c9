//! CORS for the AG UI web app: only the configured origins may call; any request header is
//! allowed (the OpenAI JS SDK sends `x-stainless-*` and `openai-*` headers of its own), and
//! `x-request-id`, `retry-after` and the `x-ratelimit-*` headers are readable by the page.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

pub fn layer(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let request_id = HeaderName::from_static(citadel_proto::metadata::REQUEST_ID);
    let mut exposed = vec![request_id, header::RETRY_AFTER];
    exposed.extend(citadel_proto::metadata::RATE_LIMIT.map(HeaderName::from_static));
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(exposed)
        .max_age(Duration::from_secs(600))
}
