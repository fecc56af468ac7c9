//! What a remote model needs to know, already validated by the configuration.

use std::time::Duration;

use citadel_embeddings::ModelInfo;
use citadel_routing::RouterSettings;

use crate::Protocol;

#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub info: ModelInfo,
    pub protocol: Protocol,
    /// The model's name on the upstream servers.
    pub upstream_model: String,
    /// Its servers, and the retry and breaker policy over them (named after the model).
    pub router: RouterSettings,
    /// Most inputs in one upstream call.
    pub batch_size: usize,
    /// Chunks of one request in flight at once.
    pub chunk_concurrency: usize,
    /// One attempt's limit (the caller's deadline may cut it shorter).
    pub attempt_timeout: Duration,
    /// `None`: no background probes.
    pub probe_interval: Option<Duration>,
}
