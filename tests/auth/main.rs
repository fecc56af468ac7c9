//! Security on every door (issue 11) over real sockets: the real binary with `auth.mode =
//! "required"`, a JWKS stand-in serving RSA keys generated for the run, tokens minted here,
//! API keys made with `citadel keys`, and rate limits shared through the real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod doors;
mod keys;
mod limits;
mod tls;
mod tokens;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use serde_json::{Value, json};

pub use common::jwt::{ISSUER, ORIGIN, RsaKey, claims, now};

/// A JWKS endpoint: the keys it publishes can change, it can fail, and it counts fetches.
#[derive(Clone)]
pub struct JwksStandIn {
    pub url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    failing: Arc<Mutex<bool>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksStandIn {
    pub async fn start(keys: &[&RsaKey]) -> JwksStandIn {
        use axum::{Json, Router, http::StatusCode, routing::get};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let stand_in = JwksStandIn {
            url,
            keys: Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect())),
            failing: Arc::new(Mutex::new(false)),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let state = stand_in.clone();
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    if *state.failing.lock().unwrap() {
                        return Err(StatusCode::INTERNAL_SERVER_ERROR);
                    }
                    Ok(Json(json!({"keys": *state.keys.lock().unwrap()})))
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        stand_in
    }

    pub fn publish(&self, key: &RsaKey) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }

    pub fn fail(&self, failing: bool) {
        *self.failing.lock().unwrap() = failing;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// `[auth]` requiring credentials, with tokens checked against `jwks_url`.
pub fn auth_config(jwks_url: &str, extra: &str) -> String {
    format!(
        "[auth]\nmode = \"required\"\njwks_url = \"{jwks_url}\"\nissuer = \"{ISSUER}\"\n\
         authorized_parties = [\"{ORIGIN}\"]\ndefault_role = \"member\"\n\
         jwks_min_refetch_secs = 1\n{extra}"
    )
}

/// POST `/v1/embeddings` with `auth` as the whole `Authorization` header (or none).
pub async fn embed(
    server: &common::Server,
    auth: Option<&str>,
    model: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = common::http()
        .post(server.url("/v1/embeddings"))
        .json(&json!({"model": model, "input": "hello secure world"}));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A refusal in OpenAI's shape, with the status and code expected.
pub fn assert_refused(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    expected: u16,
) {
    let error = common::assert_openai_error(status, body, expected);
    if expected == 401 {
        let challenge = headers
            .get("www-authenticate")
            .expect("401 carries WWW-Authenticate");
        assert!(
            challenge.to_str().unwrap().starts_with("Bearer"),
            "{challenge:?}"
        );
    }
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains("eyJ"),
        "a refusal must never echo the token: {message}"
    );
}
