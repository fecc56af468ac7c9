//! Where session tokens' keys come from: Clerk's JWKS (fetched at start, refreshed every
//! `auth.jwks_refresh_secs`, refetched for an unknown `kid` at most once per
//! `auth.jwks_min_refetch_secs`, one fetch at a time) or a PEM given in the configuration.
//! A JWKS outage keeps the keys already fetched; keys never fetched make tokens uncheckable
//! (503), not invalid (401).

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, jwk::Jwk};

/// A verification key and the one algorithm it may be used with.
pub(crate) struct VerifyKey {
    pub(crate) key: DecodingKey,
    /// The JWK's `alg`; `None` when the JWK names none (the allow-list still applies).
    pub(crate) alg: Option<Algorithm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyMiss {
    /// The key set holds no such `kid` (after a refetch, when one was allowed).
    Unknown,
    /// No key set was ever fetched: the token cannot be checked.
    Unavailable,
}

pub(crate) enum KeySource {
    Pem(Arc<VerifyKey>),
    Jwks(Arc<Jwks>),
}

impl KeySource {
    pub(crate) async fn key(&self, kid: Option<&str>) -> Result<Arc<VerifyKey>, KeyMiss> {
        match self {
            KeySource::Pem(key) => Ok(Arc::clone(key)),
            KeySource::Jwks(jwks) => jwks.key(kid).await,
        }
    }
}

/// Verification keys by `kid`.
type KeyMap = HashMap<String, Arc<VerifyKey>>;

pub(crate) struct Jwks {
    url: String,
    client: reqwest::Client,
    /// `None` until the first fetch succeeds.
    keys: RwLock<Option<Arc<KeyMap>>>,
    /// Single flight, and the time of the last fetch (for the minimum interval).
    fetch: tokio::sync::Mutex<Option<Instant>>,
    min_interval: Duration,
}

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 256 * 1024;

impl Jwks {
    pub(crate) fn new(url: &str, min_interval: Duration) -> Result<Arc<Jwks>, String> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("auth.jwks_url: cannot build an HTTP client: {e}"))?;
        Ok(Arc::new(Jwks {
            url: url.to_string(),
            client,
            keys: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(None),
            min_interval,
        }))
    }

    /// Fetches now, then every `every`, for as long as the runtime runs.
    pub(crate) fn start(self: &Arc<Self>, every: Duration) {
        let jwks = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                {
                    let mut last = jwks.fetch.lock().await;
                    jwks.refresh(&mut last).await;
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    fn lookup(&self, kid: Option<&str>) -> Result<Arc<VerifyKey>, KeyMiss> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let Some(keys) = keys.as_ref() else {
            return Err(KeyMiss::Unavailable);
        };
        // `kid` is an opaque map key; never a path or a query.
        kid.and_then(|kid| keys.get(kid))
            .cloned()
            .ok_or(KeyMiss::Unknown)
    }

    async fn key(&self, kid: Option<&str>) -> Result<Arc<VerifyKey>, KeyMiss> {
        match self.lookup(kid) {
            Ok(key) => return Ok(key),
            // A token without a kid names no key; refetching cannot help.
            Err(KeyMiss::Unknown) if kid.is_none() => return Err(KeyMiss::Unknown),
            Err(_) => {}
        }
        let mut last = self.fetch.lock().await;
        // Another caller may have fetched while this one waited.
        match self.lookup(kid) {
            Ok(key) => return Ok(key),
            Err(miss) if last.is_some_and(|t| t.elapsed() < self.min_interval) => return Err(miss),
            Err(_) => {}
        }
        self.refresh(&mut last).await;
        self.lookup(kid)
    }

    /// One fetch; a failure keeps the keys there are.
    async fn refresh(&self, last: &mut Option<Instant>) {
        *last = Some(Instant::now());
        match self.fetch_keys().await {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), url = %self.url, "JWKS fetched");
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(keys));
            }
            Err(error) => {
                tracing::warn!(%error, url = %self.url, "auth.jwks_url: cannot fetch the JWKS; keeping the keys fetched before");
            }
        }
    }

    async fn fetch_keys(&self) -> Result<KeyMap, String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("the JWKS is over {MAX_JWKS_BYTES} bytes"));
        }
        parse_jwks(&body)
    }
}

/// The usable keys of a JWKS document, by `kid`; keys that cannot be used are skipped.
fn parse_jwks(body: &[u8]) -> Result<KeyMap, String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = HashMap::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
            continue;
        };
        let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(&jwk)) else {
            continue;
        };
        let alg = value
            .get("alg")
            .and_then(|a| a.as_str())
            .and_then(|a| a.parse::<Algorithm>().ok());
        keys.insert(kid, Arc::new(VerifyKey { key, alg }));
    }
    if keys.is_empty() {
        return Err("the JWKS holds no usable key".to_string());
    }
    Ok(keys)
}

/// Clerk's PEM public key (`auth.public_key_pem`).
pub(crate) fn pem_key(pem: &str) -> Result<Arc<VerifyKey>, String> {
    let key = DecodingKey::from_rsa_pem(pem.trim().as_bytes())
        .map_err(|e| format!("auth.public_key_pem: not an RSA public key: {e}"))?;
    Ok(Arc::new(VerifyKey { key, alg: None }))
}
