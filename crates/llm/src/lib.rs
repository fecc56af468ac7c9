//! LLM coordination: chat and text completions on the fleet's OpenAI-compatible (vLLM)
//! servers, unary and streamed, through one door.
//!
//! This crate owns the LLM servers' catalog (models discovered from each server's
//! `GET /v1/models`, aliases, fallbacks), load-aware routing on top of `citadel-routing` (vLLM's
//! queue and KV-cache gauges), the chat and text wire formats, the first-chunk gate (retries and
//! fallbacks only before anything reached the caller), the committed stream's limits (idle,
//! total) and in-band failures, the one `RouteError → LlmError` mapping, and the LLM metrics.
//! Requests and answers are the contract's messages (`citadel.v1.ChatRequest`, ...): they are
//! plain data, and a second set of core types would only copy them. It must not know gRPC
//! transport, REST or configuration files.

#![forbid(unsafe_code)]

mod catalog;
mod core;
mod error;
mod flavor;
mod fleet;
mod metrics;
mod sse;
mod stream;
mod wire;

use std::{collections::BTreeMap, time::Duration};

pub use crate::core::LlmCore;
pub use error::LlmError;
pub use fleet::Fleet;
pub use stream::CompletionStream;

/// What the core needs from the configuration.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    /// An attempt's first chunk (a stream) must arrive within this.
    pub ttft_timeout: Duration,
    /// A whole completion.
    pub request_timeout: Duration,
    pub discovery_interval: Duration,
    /// `None`: no load scraping.
    pub load_interval: Option<Duration>,
    pub aliases: BTreeMap<String, String>,
    pub fallbacks: BTreeMap<String, Vec<String>>,
}
