//! What a remote model needs to know, already validated by the configuration.

use std::time::Duration;

use citadel_embeddings::ModelInfo;

use crate::Protocol;

#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// Base URL: `http://host:11434` for Ollama, `http://host:8000` or `.../v1` for OpenAI.
    pub url: String,
    /// Share of the traffic relative to the model's other endpoints.
    pub weight: u32,
    /// Sent as `Authorization: Bearer ...`.
    pub api_key: Option<String>,
}

/// Retries of one chunk: attempts in all (the first included), backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

/// When an endpoint's breaker opens, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before one trial request is let through.
    pub open_for: Duration,
}

#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub info: ModelInfo,
    pub protocol: Protocol,
    /// The model's name on the upstream servers.
    pub upstream_model: String,
    pub endpoints: Vec<EndpointSettings>,
    /// Most inputs in one upstream call.
    pub batch_size: usize,
    /// Chunks of one request in flight at once.
    pub chunk_concurrency: usize,
    /// One attempt's limit (the caller's deadline may cut it shorter).
    pub attempt_timeout: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    /// `None`: no background probes.
    pub probe_interval: Option<Duration>,
}
