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

use std::{
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://clerk.citadel.test";
pub const ORIGIN: &str = "http://localhost:3000";

/// An RSA key pair made with `openssl` for this run, and its JWK.
pub struct RsaKey {
    pub kid: String,
    pub private_pem: String,
    pub public_pem: String,
    pub jwk: Value,
}

impl RsaKey {
    pub fn generate(kid: &str) -> RsaKey {
        let dir = std::env::temp_dir().join(format!("citadel-auth-{}-{kid}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let private = dir.join("private.pem");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl is needed to make test keys (Debian: apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let private_path = private.to_str().unwrap();
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            private_path,
        ]);
        let public_pem = openssl(&["pkey", "-in", private_path, "-pubout"]);
        let modulus = openssl(&["rsa", "-in", private_path, "-noout", "-modulus"]);
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let jwk = json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&bytes), "e": "AQAB"});
        RsaKey {
            kid: kid.to_string(),
            private_pem: std::fs::read_to_string(&private).unwrap(),
            public_pem,
            jwk,
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_rsa_pem(self.private_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a valid Clerk v2 session token for `sub`, with `role` as `o.rol` when given.
pub fn claims(sub: &str, role: Option<&str>) -> Value {
    let now = now();
    let mut c = json!({"sub": sub, "iss": ISSUER, "azp": ORIGIN, "iat": now - 2,
        "nbf": now - 2, "exp": now + 60, "sid": format!("sess_{sub}"), "v": 2});
    if let Some(role) = role {
        c["o"] = json!({"id": "org_1", "slg": "citadel", "rol": role, "per": "", "fpm": ""});
    }
    c
}

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
