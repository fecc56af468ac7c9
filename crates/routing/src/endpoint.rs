//! One upstream server: its base URL, HTTP client, timeouts, breaker, load and latency, and the
//! one way a request is sent to it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use reqwest::header::RETRY_AFTER;
use tokio::time::Instant;

use crate::{
    BreakerPolicy, ClientPool, EndpointSettings, EndpointView, Timeouts,
    attempt::{AttemptError, UpstreamError, describe, parse_retry_after},
    breaker::Breaker,
};

/// Error bodies are read this far, no further: a message, not a payload.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

pub struct Endpoint {
    pub(crate) name: String,
    /// The base URL without credentials: for logs, metrics and health.
    pub(crate) url: String,
    base: reqwest::Url,
    pub(crate) weight: u32,
    api_key: Option<String>,
    timeouts: Timeouts,
    client: reqwest::Client,
    pub(crate) breaker: Breaker,
    outstanding: AtomicU32,
    /// Requests the server itself reports as queued or running (0 when it reports nothing).
    reported: AtomicU32,
    /// Exponentially weighted moving average of successful attempts, in microseconds.
    latency_us: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Counts a call in flight for as long as it lives, however the call ends (a streamed body
/// keeps it until the body is dropped).
struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A 2xx response whose body is still to be read, piece by piece under the endpoint's idle
/// limit. It counts as in flight on its endpoint until dropped; dropping it closes the
/// upstream request (a vLLM server then aborts the generation).
pub struct Response {
    inner: reqwest::Response,
    idle: Duration,
    in_flight: InFlight,
}

impl Response {
    /// The next piece of the body, `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, AttemptError> {
        match tokio::time::timeout(self.idle, self.inner.chunk()).await {
            Ok(Ok(piece)) => Ok(piece),
            Ok(Err(e)) if e.is_timeout() => Err(AttemptError::Timeout(self.idle)),
            Ok(Err(e)) => Err(AttemptError::Connect(describe(&e))),
            Err(_) => Err(AttemptError::Timeout(self.idle)),
        }
    }

    /// The whole body, refused past `limit` bytes: a broken or hostile server must not make
    /// us buffer without bound.
    pub async fn bytes(mut self, limit: usize) -> Result<Vec<u8>, AttemptError> {
        let mut body = Vec::new();
        while let Some(piece) = self.chunk().await? {
            if body.len() + piece.len() > limit {
                let message = format!("answered more than {limit} bytes for this request");
                return Err(AttemptError::Malformed(message));
            }
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.in_flight.0
    }
}

impl Endpoint {
    pub(crate) fn new(
        settings: &EndpointSettings,
        clients: &ClientPool,
        breaker: BreakerPolicy,
    ) -> Result<Self, String> {
        let base = reqwest::Url::parse(settings.url.trim_end_matches('/'))
            .map_err(|e| format!("`{}` is not a valid URL: {e}", settings.url))?;
        let client = clients
            .client_for(&base, settings.timeouts.connect)
            .map_err(|e| format!("cannot build an HTTP client for `{}`: {e}", settings.url))?;
        let url = without_credentials(&settings.url);
        Ok(Endpoint {
            name: match settings.name.as_str() {
                "" => url.clone(),
                name => name.to_string(),
            },
            url,
            base,
            weight: settings.weight.max(1),
            api_key: settings.api_key.clone(),
            timeouts: settings.timeouts,
            client,
            breaker: Breaker::new(breaker),
            outstanding: AtomicU32::new(0),
            reported: AtomicU32::new(0),
            latency_us: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The base URL as configured (credentials removed).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The base URL as configured, for adapters to build request URLs on.
    pub fn base(&self) -> &reqwest::Url {
        &self.base
    }

    /// A request to `url` on this endpoint's client, with its key and (traces on) the
    /// current trace's headers.
    pub fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, url);
        if let Some(inject) = HEADER_INJECTOR.get() {
            let mut headers = reqwest::header::HeaderMap::new();
            inject(&mut headers);
            request = request.headers(headers);
        }
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends `request` and waits for its head, at most the endpoint's first-byte limit or
    /// `limit`, whichever is shorter. A 2xx comes back as a [`Response`] to read; anything
    /// else as [`AttemptError::Status`] with what its body said.
    pub async fn send(
        self: &Arc<Self>,
        request: reqwest::RequestBuilder,
        limit: Duration,
    ) -> Result<Response, AttemptError> {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(self.clone());
        let wait = limit.min(self.timeouts.first_byte);
        let inner = match tokio::time::timeout(wait, request.send()).await {
            Err(_) => return Err(AttemptError::Timeout(wait)),
            Ok(Err(e)) if e.is_timeout() => return Err(AttemptError::Timeout(wait)),
            Ok(Err(e)) => return Err(AttemptError::Connect(describe(&e))),
            Ok(Ok(response)) => response,
        };
        let status = inner.status();
        let retry_after = parse_retry_after(inner.headers().get(RETRY_AFTER));
        let response = Response {
            inner,
            idle: self.timeouts.idle,
            in_flight,
        };
        if status.is_success() {
            return Ok(response);
        }
        // The status is the verdict; a body that breaks off leaves its message empty.
        let body = response.bytes(ERROR_BODY_LIMIT).await.unwrap_or_default();
        Err(AttemptError::Status {
            code: status.as_u16(),
            error: UpstreamError::parse(&body),
            retry_after,
        })
    }

    /// The server's own report of its load (queued plus running requests), from its metrics.
    pub fn set_reported_load(&self, requests: u32) {
        self.reported.store(requests, Ordering::Relaxed);
    }

    pub(crate) fn observe(&self, took: Duration) {
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

    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// What the balancer compares: ours in flight plus what the server reported.
    pub(crate) fn load(&self) -> u32 {
        self.outstanding()
            .saturating_add(self.reported.load(Ordering::Relaxed))
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
            name: self.name.clone(),
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

/// Adds the caller's trace context to every upstream request. Set once by the binary when
/// traces are on: this crate knows no tracing backend.
static HEADER_INJECTOR: std::sync::OnceLock<fn(&mut reqwest::header::HeaderMap)> =
    std::sync::OnceLock::new();

/// Installs the function that writes trace headers (`traceparent`, `tracestate`) into each
/// upstream request. The first call wins.
pub fn set_header_injector(inject: fn(&mut reqwest::header::HeaderMap)) {
    let _ = HEADER_INJECTOR.set(inject);
}
