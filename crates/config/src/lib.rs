//! Citadel's configuration: one typed tree, loaded in layers and validated before anything starts.
//!
//! This crate owns the shape of the configuration, its embedded defaults (`config/default.toml`),
//! the layering (defaults, profile file, `--config` file, `CITADEL_*` variables, flags) and the
//! checks that name the offending key. It must not open sockets or files other than the
//! configuration files themselves: `citadel config check` relies on it to validate a production
//! file without connecting anywhere.

#![forbid(unsafe_code)]

mod auth;
mod llm;
mod load;
mod realtime;
mod redact;
mod validate;
mod vectors;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

pub use auth::{AuthConfig, AuthMode, RoleConfig};
pub use llm::LlmConfig;
pub use load::{ConfigError, Overrides, ignored_vars, load};
pub use realtime::{AguiConfig, WsConfig};
pub use vectors::{VectorStoreKind, VectorsConfig};

/// The whole configuration tree.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Profile name (`CITADEL_ENV`): picks `config/<env>.toml`. Informational once loaded.
    #[serde(default)]
    pub env: Option<String>,
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    pub embeddings: EmbeddingsConfig,
    pub onnx: OnnxConfig,
    /// Embedding models by canonical name.
    pub models: BTreeMap<String, ModelConfig>,
    /// How remote models reach their servers: timeouts, retries, breakers, probes.
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub llm: LlmConfig,
    #[serde(default)]
    pub qdrant: Option<QdrantConfig>,
    #[serde(default)]
    pub vectors: VectorsConfig,
    pub database: DatabaseConfig,
    pub cache: CacheConfig,
    pub workflows: WorkflowsConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub ws: WsConfig,
    #[serde(default)]
    pub agui: AguiConfig,
}

fn default_watch_buffer() -> usize {
    16_384
}

/// The OpenAI-compatible REST edge.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address of the REST edge.
    pub addr: SocketAddr,
    /// Largest request body accepted (413 past it, at once when `Content-Length` says so).
    pub body_limit_bytes: usize,
    /// Time allowed to receive a whole request body, however it trickles in (408 past it).
    pub body_read_timeout_ms: u64,
    /// Longest pause between two pieces of a request body (408 past it).
    pub body_idle_timeout_ms: u64,
    /// Deadline given to each gRPC call made for a REST request (504 past it).
    pub request_timeout_ms: u64,
    /// Origins allowed by CORS.
    pub cors_allowed_origins: Vec<String>,
    /// What one client's connections may hold.
    pub connections: ConnectionsConfig,
    /// PEM certificate chain and private key: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

/// Limits of one listener's connections, so no client can hold sockets, memory or the drain.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Open connections at most; past it the longest-idle one is closed for a newcomer, and a
    /// newcomer is refused when every connection is serving a request.
    pub max_connections: usize,
    /// Time for a request head (or a new connection's first bytes) to arrive. On HTTP/1.1 it
    /// also bounds a keep-alive connection's silence between requests.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout_ms: u64,
    /// A response the client makes no progress reading for this long closes its connection.
    pub write_timeout_ms: u64,
    /// HTTP/2 PING interval; an unanswered PING closes the connection after
    /// `keepalive_timeout_ms`.
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    /// Concurrent streams on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
}

/// The gRPC mesh.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Listen address of the gRPC server.
    pub addr: SocketAddr,
    /// The gRPC server the REST edge calls; empty means this process's own, over loopback.
    pub upstream: String,
    /// Largest gRPC message, either direction.
    pub max_message_bytes: usize,
    /// Time for a unary call's request message to arrive (DEADLINE_EXCEEDED past it).
    pub request_body_timeout_ms: u64,
    /// What one client's connections may hold.
    pub connections: ConnectionsConfig,
    /// PEM certificate chain and private key: serve gRPC over TLS (`h2` by ALPN).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight requests may run after SIGTERM before the process exits anyway.
    pub drain_timeout_ms: u64,
    /// After SIGTERM, how long a connection with no request in flight (a half-sent request
    /// head) may stay; idle connections close at once.
    pub drain_grace_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive; `RUST_LOG` overrides it.
    pub level: String,
}

/// Traces: off unless `otlp_endpoint` names a collector.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector, e.g. `http://collector:4317`; empty: no traces, at no cost.
    pub otlp_endpoint: String,
    /// Share of new traces kept, 0.0 to 1.0; a caller's `traceparent` decision is followed.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Longest a finished span waits before it is sent.
    pub export_delay_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
            service_name: "citadel".into(),
            export_delay_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// Most inputs one request may carry.
    pub max_inputs_per_request: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxConfig {
    /// Path of `libonnxruntime.so`.
    pub library_path: PathBuf,
}

/// Where a model's vectors come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// In process, on ONNX Runtime.
    Onnx,
    /// An Ollama server (`POST /api/embed`).
    Ollama,
    /// An OpenAI-compatible server (vLLM, TEI, Infinity, OpenAI).
    Openai,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Onnx => "onnx",
            BackendKind::Ollama => "ollama",
            BackendKind::Openai => "openai",
        }
    }
}

/// One upstream server: an embedding model's endpoint or an `[[llm.servers]]` entry, with the
/// same options either way. Timeouts left out come from `[upstream]` (or `[llm]` for LLM
/// servers).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// For logs, metrics and health; required for LLM servers.
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Bearer key for OpenAI-compatible servers; redacted in `config check`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// TCP connection set-up.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// From sending a request to the response head.
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    /// Longest pause between two pieces of a response body.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
}

fn default_weight() -> u32 {
    1
}

/// One embedding model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A profile can switch off a model the embedded defaults define (`enabled = false`).
    pub enabled: bool,
    pub backend: BackendKind,
    /// Other names that resolve to this model.
    pub aliases: Vec<String>,
    /// Vector size.
    pub dimensions: u32,
    /// Longest input in tokens, special tokens included.
    pub max_input_tokens: u32,
    /// `onnx`: directory with the graph and `tokenizer.json`.
    pub dir: Option<PathBuf>,
    /// `onnx`: the graph's file name inside `dir`.
    pub graph: String,
    /// `onnx`: sessions (one thread each) running batches in parallel.
    pub sessions: usize,
    /// `onnx`: threads inside one session.
    pub intra_threads: usize,
    /// `onnx`: most padded tokens in one model run.
    pub max_batch_tokens: usize,
    /// `onnx`: most tokens sorted together into model runs at once: how much queued work a
    /// newcomer can find ahead of it. 0: the larger of 4,096 and sessions x max_batch_tokens.
    pub max_window_tokens: usize,
    /// Inputs waiting or running before requests are refused with 429.
    pub max_queued_inputs: usize,
    /// `ollama` / `openai`: the servers.
    pub endpoints: Vec<EndpointConfig>,
    /// `ollama` / `openai`: the model's name upstream (defaults to this model's name).
    pub upstream_model: Option<String>,
    /// `ollama` / `openai`: most inputs in one upstream call; bigger requests are split.
    pub batch_size: usize,
    /// `ollama` / `openai`: chunks of one request in flight at once.
    pub chunk_concurrency: usize,
    /// Named prefixes put before every input, e.g. `query = "search_query: "`.
    pub prompts: BTreeMap<String, String>,
    /// The prompt used when a request names none.
    pub default_prompt: Option<String>,
    /// Model served instead when none of this model's servers can answer (same dimensions).
    pub fallback: Option<String>,
    /// Part of every cache key: bump it when the model's weights change upstream (after an
    /// `ollama pull`), so cached vectors of the old weights are never served.
    pub revision: Option<String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            backend: BackendKind::Onnx,
            aliases: Vec::new(),
            dimensions: 0,
            max_input_tokens: 0,
            dir: None,
            graph: "model.onnx".to_string(),
            sessions: 2,
            intra_threads: 1,
            max_batch_tokens: 256,
            max_window_tokens: 0,
            max_queued_inputs: 16384,
            endpoints: Vec::new(),
            upstream_model: None,
            batch_size: 32,
            chunk_concurrency: 4,
            prompts: BTreeMap::new(),
            default_prompt: None,
            fallback: None,
            revision: None,
            enabled: true,
        }
    }
}

/// Shared by every remote model's endpoints.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Time to open a TCP connection to an upstream server.
    pub connect_timeout_ms: u64,
    /// Time one attempt may take (the caller's deadline cuts it shorter).
    pub attempt_timeout_ms: u64,
    /// Default for endpoints: from sending a request to the response head.
    pub first_byte_timeout_ms: u64,
    /// Default for endpoints: longest pause between two pieces of a response body.
    pub idle_timeout_ms: u64,
    /// Idle keep-alive connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    /// Interval of the background probe (a one-input embed) of each endpoint; 0 turns it off.
    pub probe_interval_ms: u64,
}

/// Retries of one upstream call: exponential backoff with full jitter, honouring `Retry-After`,
/// never past the caller's deadline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

/// The circuit breaker kept for each endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses requests before letting one trial through.
    pub open_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QdrantConfig {
    /// Qdrant's gRPC address, e.g. `http://qdrant:6334`.
    pub url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    /// Each call's limit, connecting included (at most 5 s of it).
    #[serde(default = "default_qdrant_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_qdrant_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://FILE` or `postgres://USER:PASSWORD@HOST:PORT/DB`.
    pub url: String,
}

/// How the embedding cache is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheModeConfig {
    On,
    Off,
    /// Serve hits, store nothing.
    ReadOnly,
    /// Store, never serve.
    WriteOnly,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub mode: CacheModeConfig,
    /// How long a vector stays cached, in both levels.
    pub ttl_secs: u64,
    /// Bound of the in-process L1, in bytes of vectors and keys; 0 turns L1 off.
    pub l1_max_bytes: u64,
    /// Redis for the shared L2 cache; empty means in-process only.
    pub redis_url: String,
    /// Longest a request waits on Redis before going on without it.
    pub redis_timeout_ms: u64,
    /// Prefix of every Redis key (a versioned namespace is added after it).
    pub key_prefix: String,
}

/// Durable workflows: the queue in `database.url` and the workers that run it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowsConfig {
    /// Run a worker inside `citadel serve` (`citadel worker` runs one on its own).
    pub worker_enabled: bool,
    /// Tasks one worker runs at once.
    pub concurrency: usize,
    /// How long a claimed task stays a worker's without a heartbeat; a dead worker's tasks are
    /// picked up again after it.
    pub lease_ms: u64,
    /// How often a worker extends the leases of the tasks it runs (well under `lease_ms`).
    pub heartbeat_ms: u64,
    /// Longest an idle worker waits before looking for due work (retries, `not_before`) when
    /// no event woke it.
    pub poll_interval_ms: u64,
    /// Hard limit on one attempt when the submitter names none (Celery's 30 minutes).
    pub default_time_limit_ms: u64,
    /// Retry policy when the submitter names none.
    pub default_max_attempts: u32,
    pub default_initial_backoff_ms: u64,
    pub default_max_backoff_ms: u64,
    /// How long a finished workflow and its result are kept.
    pub result_ttl_secs: u64,
    /// After SIGTERM, how long running tasks may finish before their leases are released.
    pub shutdown_grace_ms: u64,
    /// The EmbeddingService that `embed_batch` and `cache_warm` call; empty means this
    /// process's own gRPC server (`serve`) or `grpc.upstream`/`grpc.addr` (`worker`).
    pub embeddings_url: String,
    /// Largest `params` of one workflow, in bytes of JSON (400 naming `params` past it).
    pub max_params_bytes: usize,
    /// Most bytes of workflows in one list page, besides the page size (a page always holds at
    /// least one workflow).
    pub list_page_max_bytes: usize,
    /// Changes a Watch with records (the WebSocket's, the agent's) may fall behind before it
    /// is dropped and told how many it missed (it then watches again with a snapshot).
    #[serde(default = "default_watch_buffer")]
    pub watch_buffer: usize,
    /// Texts per EmbeddingService call in `embed_batch` and `cache_warm` (one progress step).
    pub embed_chunk_size: usize,
    /// The only directory `input_file`/`output_file` parameters may name files in (relative
    /// paths below it).
    pub files_dir: PathBuf,
    /// The API key workflow tasks present to EmbeddingService and CompletionService when
    /// `auth.mode = "required"` (create one with `citadel keys create`).
    #[serde(default)]
    pub api_key: Option<String>,
    /// `citadel worker`'s operations port: `/metrics`, `/health/`, `/health/ready`,
    /// `/health/detailed` and gRPC health (`""`, `citadel.v1.WorkflowService`).
    #[serde(default = "default_worker_addr")]
    pub worker_addr: SocketAddr,
    /// How often each process counts the queue (the depth and age metrics) and so probes the
    /// workflow database for health.
    #[serde(default = "default_monitor_interval_ms")]
    pub monitor_interval_ms: u64,
}

fn default_worker_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8001))
}

fn default_monitor_interval_ms() -> u64 {
    5_000
}

impl Config {
    /// The configuration as JSON with every secret (passwords in URLs, API keys) masked.
    pub fn redacted_json(&self) -> serde_json::Value {
        redact::redacted(self)
    }
}
