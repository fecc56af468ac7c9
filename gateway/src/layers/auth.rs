//! The REST edge's part of the policy: find the caller's credential and hand it on. The mesh
//! decides (`citadel-auth` behind its gRPC door); this layer only translates.
//!
//! A credential is `Authorization` (`Bearer <token>`, or a bare token as Clerk's SDKs allow),
//! else Clerk's `__session` cookie, which a browser sends on its own and so is taken only from
//! a configured origin (an `Origin` in `http.cors_allowed_origins`, or a same-origin request
//! without one). On the way out it puts the caller's `x-ratelimit-*` on the answer and
//! `WWW-Authenticate` on a 401.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};

use crate::mesh_client::{Credential, RateSlot};

#[derive(Clone)]
pub struct CookieOrigins(Arc<[String]>);

impl CookieOrigins {
    /// Only exact origins: a `*` in the CORS list never lets cookies through.
    pub fn new(origins: &[String]) -> Self {
        CookieOrigins(origins.iter().filter(|o| *o != "*").cloned().collect())
    }
}

pub async fn credentials(
    State(origins): State<CookieOrigins>,
    mut request: Request,
    next: Next,
) -> Response {
    let credential = find(request.headers(), &origins);
    let presented = credential.is_some();
    let slot = RateSlot::default();
    request.extensions_mut().insert(Credential(credential));
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in slot.take().iter() {
        headers.entry(name).or_insert_with(|| value.clone());
    }
    if response.status() == StatusCode::UNAUTHORIZED {
        let challenge = match presented {
            true => "Bearer realm=\"citadel\", error=\"invalid_token\"",
            false => "Bearer realm=\"citadel\"",
        };
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

fn find(headers: &HeaderMap, origins: &CookieOrigins) -> Option<HeaderValue> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return Some(value.clone());
    }
    let token = session_cookie(headers)?;
    let origin_ok = match headers.get(header::ORIGIN) {
        Some(origin) => origins.0.iter().any(|o| o.as_bytes() == origin.as_bytes()),
        // No Origin: not a cross-site fetch, unless the browser says it is.
        None => headers
            .get("sec-fetch-site")
            .is_none_or(|s| s == "same-origin" || s == "none"),
    };
    if !origin_ok {
        tracing::warn!(target: "citadel::audit", reason = "cookie_origin", "session cookie from an origin not allowed; ignored");
        return None;
    }
    HeaderValue::try_from(format!("Bearer {token}")).ok()
}

/// The `__session` cookie's value.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == "__session" && !value.is_empty()).then(|| value.to_string())
        })
}
