//! A stand-in vLLM server: the OpenAI-compatible completion API exactly as vLLM writes it.
//!
//! An [`LlmStandIn`] serves `POST /v1/chat/completions` and `POST /v1/completions` (unary and
//! SSE streams), `GET /v1/models` (with vLLM's `max_model_len`), `GET /health` and the
//! `vllm:` gauges on `GET /metrics`, over a real socket on bare hyper. What it generates is a
//! deterministic function of the request (token `i` is `tok{i} `), so a test can check every
//! chunk. It applies a deterministic tool rule so agent loops can be driven (with tools offered,
//! a user message calls the tool it names, else — unless `tool_choice` is `auto` — the first;
//! the arguments are the JSON object in the text, else `{"input": text}`; after a tool message
//! it answers `tool result: <content> `), checks the context
//! length as vLLM does, and can be told to be slow, fail, hang, reset, cut, stall or corrupt a
//! stream ([`LlmBehaviour`]), in process or over `POST /_standin/behaviour`.

mod render;
mod request;
mod server;
mod stream;
mod track;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use track::Counters;

/// Tokens generated when neither the request nor the behaviour says how many.
pub const DEFAULT_TOKENS: u32 = 16;

/// One served model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmModelSpec {
    pub id: String,
    /// vLLM's context window: prompt tokens plus output tokens may not exceed it.
    pub max_model_len: u32,
}

impl LlmModelSpec {
    pub fn new(id: impl Into<String>, max_model_len: u32) -> Self {
        LlmModelSpec {
            id: id.into(),
            max_model_len,
        }
    }
}

/// The served models; a request for another gets vLLM's 404.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmStandInConfig {
    pub models: Vec<LlmModelSpec>,
}

impl Default for LlmStandInConfig {
    fn default() -> Self {
        LlmStandInConfig {
            models: vec![LlmModelSpec::new("standin-llm", 4096)],
        }
    }
}

/// What the stand-in does with the next completion requests. Replaced whole by `set_behaviour`.
#[derive(Clone, Default, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmBehaviour {
    /// Delay before the first chunk (and before unary answers). A stream's headers go out with
    /// its first chunk, as vLLM's do after prefill.
    pub ttft_ms: u64,
    /// Delay between chunks.
    pub itl_ms: u64,
    /// Tokens to generate (default 16); the request's `max_tokens` caps it (`"length"`).
    pub tokens: Option<u32>,
    /// Statuses to answer the next requests with, one each.
    pub fail_next: Vec<u16>,
    /// A status to answer every request with.
    pub fail_always: Option<u16>,
    /// `Retry-After` seconds sent with those failures.
    pub retry_after: Option<u64>,
    /// vLLM's older flat error shape `{"object":"error",...}` instead of `{"error":{...}}`.
    pub flat_errors: bool,
    /// Accept the request and never answer (no headers).
    pub hang: bool,
    /// Close the connection without answering.
    pub reset: bool,
    /// Streams: send this many content chunks, then close the connection (no `[DONE]`).
    pub cut_after: Option<u32>,
    /// Streams: after this many content chunks send `data: {not json`, then carry on.
    pub malformed_after: Option<u32>,
    /// Streams: after this many content chunks send nothing more; the connection stays open.
    pub stall_after: Option<u32>,
}

/// What the stand-in has served, for assertions.
#[derive(Clone, Default, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmStats {
    /// Completion requests received (answered or not).
    pub requests: u64,
    /// Of those, the ones that asked for `"stream": true`.
    pub streams: u64,
    /// Requests answered 200 to the end (a stream through `[DONE]`).
    pub completed: u64,
    /// Requests whose client went away before the answer finished (not those `stop` cut off).
    pub aborted: u64,
    /// Requests being answered now.
    pub in_flight: u64,
    /// For the last abort: milliseconds from the last chunk written (or the request's arrival,
    /// if none was) to the abort being noticed.
    pub last_abort_after_last_write_ms: Option<u64>,
    /// The last completion request's JSON body, as received.
    pub last_request: Option<serde_json::Value>,
    /// The last completion request's W3C `traceparent` header, if it had one.
    #[serde(default)]
    pub last_traceparent: Option<String>,
}

/// Shared by every connection of one stand-in.
pub(crate) struct Shared {
    pub(crate) config: LlmStandInConfig,
    pub(crate) behaviour: Mutex<LlmBehaviour>,
    pub(crate) counters: Counters,
    /// Mixed into response ids so two stand-ins do not hand out the same ones.
    pub(crate) salt: u64,
}

impl Shared {
    pub(crate) fn behaviour(&self) -> LlmBehaviour {
        self.behaviour.lock().map(|b| b.clone()).unwrap_or_default()
    }

    pub(crate) fn set_behaviour(&self, behaviour: LlmBehaviour) {
        if let Ok(mut current) = self.behaviour.lock() {
            *current = behaviour;
        }
    }

    /// The behaviour for one completion request; consumes one entry of `fail_next`.
    pub(crate) fn next_behaviour(&self) -> LlmBehaviour {
        let Ok(mut current) = self.behaviour.lock() else {
            return LlmBehaviour::default();
        };
        let now = current.clone();
        if !current.fail_next.is_empty() {
            current.fail_next.remove(0);
        }
        now
    }
}

/// A running stand-in vLLM server. Dropping it stops it.
pub struct LlmStandIn {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl LlmStandIn {
    /// Listens on `127.0.0.1:0` and serves until stopped.
    pub async fn start(config: LlmStandInConfig) -> anyhow::Result<LlmStandIn> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Listens on `addr` (a fixed port brings a stopped server back at its old address).
    pub async fn start_on(
        addr: SocketAddr,
        config: LlmStandInConfig,
    ) -> anyhow::Result<LlmStandIn> {
        anyhow::ensure!(!config.models.is_empty(), "the stand-in needs a model");
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let salt = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
            ^ u64::from(addr.port());
        let shared = Arc::new(Shared {
            counters: Counters::new(config.models.len()),
            config,
            behaviour: Mutex::default(),
            salt,
        });
        let task = tokio::spawn(server::accept_loop(listener, shared.clone()));
        Ok(LlmStandIn { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the behaviour whole; requests that arrive from now on see it.
    pub fn set_behaviour(&self, behaviour: LlmBehaviour) {
        self.shared.set_behaviour(behaviour);
    }

    pub fn behaviour(&self) -> LlmBehaviour {
        self.shared.behaviour()
    }

    pub fn stats(&self) -> LlmStats {
        self.shared.counters.snapshot()
    }

    /// Kills the server: the port stops accepting and every open connection is dropped.
    pub fn stop(&self) {
        self.shared.counters.stop();
        self.task.abort();
    }
}

impl Drop for LlmStandIn {
    fn drop(&mut self) {
        self.shared.counters.stop();
        self.task.abort();
    }
}
