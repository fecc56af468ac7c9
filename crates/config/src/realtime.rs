//! `[ws]` and `[agui]`: the real-time edge. `/ws/orchestration`'s frame bound, keep-alive and
//! metrics cadence; the AG-UI agent's model and the bounds of its tool loop.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsConfig {
    /// Largest client frame; a bigger one closes the socket with 1009.
    pub max_message_bytes: usize,
    /// Every `metrics` subscriber gets a snapshot this often.
    pub metrics_interval_ms: u64,
    /// How often the server pings; a client silent for three intervals is dropped.
    pub ping_interval_ms: u64,
    /// Messages queued for one socket before its workflow feed counts as slow (`lagged`).
    pub send_queue: usize,
    /// Workflow changes a socket may fall behind the watch it shares with the principal's
    /// other sockets before it is told `lagged` (and sent a fresh snapshot).
    pub feed_buffer: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_message_bytes: 64 * 1024,
            metrics_interval_ms: 1_000,
            ping_interval_ms: 15_000,
            send_queue: 256,
            feed_buffer: 4_096,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AguiConfig {
    /// The LLM a run uses when `forwardedProps.model` names none; empty: the first model the
    /// LLM servers list.
    pub default_model: String,
    /// The embedding model `generate_embedding` uses when its arguments name none.
    pub embedding_model: String,
    /// Model calls in one run (each server-side action costs one more): the loop's bound.
    pub max_iterations: u32,
    /// How long `execute_workflow` waits for its workflow before answering with its state.
    pub workflow_wait_ms: u64,
}

impl Default for AguiConfig {
    fn default() -> Self {
        AguiConfig {
            default_model: String::new(),
            embedding_model: "all-minilm".to_string(),
            max_iterations: 6,
            workflow_wait_ms: 60_000,
        }
    }
}
