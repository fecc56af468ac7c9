//! One upstream server of a model: its HTTP client, breaker, load and latency.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use citadel_embeddings::EndpointView;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio::time::Instant;

use crate::{
    BreakerPolicy, ClientPool, EndpointSettings, Protocol,
    attempt::{AttemptError, describe, parse_retry_after},
    breaker::Breaker,
    wire,
};

pub(crate) struct Endpoint {
    /// The base URL without credentials: for logs, metrics and health.
    pub(crate) url: String,
    embed_url: reqwest::Url,
    pub(crate) weight: u32,
    api_key: Option<String>,
    client: reqwest::Client,
    pub(crate) breaker: Breaker,
    outstanding: AtomicU32,
    /// Exponentially weighted moving average of successful calls, in microseconds.
    latency_us: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Counts a call in flight for as long as it lives, however the call ends.
struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Endpoint {
    pub(crate) fn new(
        settings: &EndpointSettings,
        protocol: Protocol,
        clients: &ClientPool,
        breaker: BreakerPolicy,
    ) -> Result<Self, String> {
        let embed_url = reqwest::Url::parse(&protocol.embed_url(&settings.url))
            .map_err(|e| format!("`{}` is not a valid URL: {e}", settings.url))?;
        let client = clients
            .client_for(&embed_url)
            .map_err(|e| format!("cannot build an HTTP client for `{}`: {e}", settings.url))?;
        Ok(Endpoint {
            url: without_credentials(&settings.url),
            embed_url,
            weight: settings.weight.max(1),
            api_key: settings.api_key.clone(),
            client,
            breaker: Breaker::new(breaker),
            outstanding: AtomicU32::new(0),
            latency_us: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// POSTs `body` and returns the 2xx body (at most `limit` bytes), or why not.
    pub(crate) async fn post(
        &self,
        body: bytes::Bytes,
        timeout: Duration,
        limit: usize,
    ) -> Result<Vec<u8>, AttemptError> {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&self.outstanding);
        let started = Instant::now();
        let mut request = self
            .client
            .post(self.embed_url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .timeout(timeout)
            .body(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let transport = |e: reqwest::Error| match e.is_timeout() {
            true => AttemptError::Timeout(timeout),
            false => AttemptError::Connect(describe(&e)),
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let retry_after = parse_retry_after(response.headers().get(RETRY_AFTER));
        // A broken or hostile server must not make us buffer without bound.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > limit {
                let message = format!("answered more than {limit} bytes for this request");
                return Err(AttemptError::Malformed(message));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(AttemptError::Status {
                code: status.as_u16(),
                message: wire::error_message(&body),
                retry_after,
            });
        }
        self.observe(started.elapsed());
        Ok(body)
    }

    fn observe(&self, took: Duration) {
        let sample = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.latency_us.load(Ordering::Relaxed);
        // alpha = 1/8: smooth enough to ignore one slow call, quick to follow a real change.
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.latency_us.store(new, Ordering::Relaxed);
    }

    pub(crate) fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub(crate) fn latency_us(&self) -> u64 {
        self.latency_us.load(Ordering::Relaxed)
    }

    pub(crate) fn note(&self, error: Option<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub(crate) fn view(&self, now: Instant) -> EndpointView {
        let (breaker, consecutive_failures) = self.breaker.view(now);
        EndpointView {
            url: self.url.clone(),
            weight: self.weight,
            breaker,
            outstanding: self.outstanding(),
            consecutive_failures,
            last_error: self.last_error(),
            latency: Duration::from_micros(self.latency_us()),
        }
    }
}

fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.as_str().trim_end_matches('/').to_string()
        }
        Err(_) => url.to_string(),
    }
}
