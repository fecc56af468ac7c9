//! Stand-in upstream embedding servers, for Citadel's tests and benchmarks only.
//!
//! A [`StandIn`] speaks the real wire formats over a real socket: Ollama's `POST /api/embed` and
//! `GET /api/tags`, and OpenAI's `POST /v1/embeddings` (float or base64). Its vectors are a
//! deterministic function of the text ([`vector`]), so a test can check every vector and its
//! order. It can be told to add latency, answer given statuses, reset connections, hang, or
//! answer malformed JSON or vectors of the wrong size ([`Behaviour`]), in process or over
//! `POST /_standin/behaviour`. It must never be linked into the `citadel` binary.

#![forbid(unsafe_code)]

pub mod llm;
pub mod otlp;
pub mod qdrant;
mod server;
mod wire;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use llm::{LlmBehaviour, LlmModelSpec, LlmStandIn, LlmStandInConfig, LlmStats};
pub use otlp::{CollectedSpan, OtlpStandIn};
pub use qdrant::{QdrantControl, QdrantStandIn};
pub use wire::vector;

/// What the stand-in does with the next requests. Replaced whole by `set_behaviour`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Added before every embedding answer.
    pub latency_ms: u64,
    /// Statuses to answer the next embedding requests with, one each, before answering normally.
    pub fail_next: Vec<u16>,
    /// A status to answer every embedding request with.
    pub fail_always: Option<u16>,
    /// `Retry-After` seconds sent with the failure statuses.
    pub retry_after: Option<u64>,
    /// Never answer.
    pub hang: bool,
    /// Close the connection without answering.
    pub reset: bool,
    /// Answer vectors one component short.
    pub wrong_dimensions: bool,
    /// Answer a body that is not JSON.
    pub malformed: bool,
    /// OpenAI: answer base64 even when floats were asked for.
    pub base64: bool,
}

/// What the stand-in has served, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Stats {
    /// Embedding requests received (answered or not).
    pub requests: u64,
    /// Inputs received over all embedding requests.
    pub inputs: u64,
    /// The most inputs one request carried.
    pub largest_batch: u64,
    /// The last embedding request's W3C `traceparent` header, if it had one.
    #[serde(default)]
    pub last_traceparent: Option<String>,
}

/// Models and their vector sizes.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    /// Served models; an unknown model gets Ollama's or OpenAI's 404.
    pub models: HashMap<String, usize>,
}

impl StandInConfig {
    pub fn single(model: &str, dimensions: usize) -> Self {
        StandInConfig {
            models: HashMap::from([(model.to_string(), dimensions)]),
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    inputs: AtomicU64,
    largest: AtomicU64,
    last_traceparent: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn traced(&self, traceparent: Option<&str>) {
        if let Ok(mut last) = self.last_traceparent.lock() {
            *last = traceparent.map(str::to_string);
        }
    }

    pub(crate) fn record(&self, inputs: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inputs.fetch_add(inputs as u64, Ordering::Relaxed);
        self.largest.fetch_max(inputs as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            inputs: self.inputs.load(Ordering::Relaxed),
            largest_batch: self.largest.load(Ordering::Relaxed),
            last_traceparent: self.last_traceparent.lock().ok().and_then(|t| t.clone()),
        }
    }
}

/// Shared by every connection of one stand-in.
pub(crate) struct Shared {
    pub(crate) config: StandInConfig,
    pub(crate) behaviour: Mutex<Behaviour>,
    pub(crate) counters: Counters,
}

/// A running stand-in server. Dropping it stops it.
pub struct StandIn {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl StandIn {
    /// Listens on `127.0.0.1:0` and serves until stopped.
    pub async fn start(config: StandInConfig) -> std::io::Result<StandIn> {
        Self::start_on(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            config,
        )
        .await
    }

    /// Listens on `addr` (a fixed port brings a stopped endpoint back at its old address).
    pub async fn start_on(addr: SocketAddr, config: StandInConfig) -> std::io::Result<StandIn> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            behaviour: Mutex::default(),
            counters: Counters::default(),
        });
        let task = tokio::spawn(server::accept_loop(listener, shared.clone()));
        Ok(StandIn { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        if let Ok(mut current) = self.shared.behaviour.lock() {
            *current = behaviour;
        }
    }

    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Kills the server: the port stops accepting and every open connection is dropped.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}
