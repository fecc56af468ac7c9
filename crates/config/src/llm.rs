//! `[llm]`: the LLM servers, how their models are found and named, and the limits of a
//! completion. Retries and breakers follow `[upstream.retry]` and `[upstream.breaker]`, the same
//! policy as embedding endpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::EndpointConfig;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// OpenAI-compatible (vLLM) servers; each needs a `name`.
    pub servers: Vec<EndpointConfig>,
    /// Each server's `GET /v1/models` is read at start-up and this often after.
    pub discovery_interval_ms: u64,
    /// A server's `GET /metrics` (vLLM's queue and KV-cache gauges) is read this often to route
    /// by load; 0: route on our own in-flight counts only.
    pub load_interval_ms: u64,
    /// A stream attempt's first chunk must come within this; until then the call may be
    /// retried or fall back. (A unary answer comes after the whole generation: it is bounded
    /// by `request_timeout_ms`.)
    pub ttft_timeout_ms: u64,
    /// Longest pause between two chunks of a stream; past it the stream ends with an error.
    pub stream_idle_timeout_ms: u64,
    /// A whole completion, streamed or not.
    pub request_timeout_ms: u64,
    /// Public name -> a model the servers serve.
    pub aliases: BTreeMap<String, String>,
    /// A model -> models to try, in order, when none of its servers can answer.
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            servers: Vec::new(),
            discovery_interval_ms: 30_000,
            load_interval_ms: 2_000,
            ttft_timeout_ms: 30_000,
            stream_idle_timeout_ms: 30_000,
            request_timeout_ms: 600_000,
            aliases: BTreeMap::new(),
            fallbacks: BTreeMap::new(),
        }
    }
}
