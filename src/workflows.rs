//! Wiring of the workflow crate into the binary: the store on `database.url`, its event feed,
//! the task kinds with their mesh clients (EmbeddingService, CompletionService, VectorService), and the worker (in `serve` unless
//! `workflows.worker_enabled = false`, or alone as `citadel worker`).

use std::time::Duration;

use anyhow::Context;
use citadel_config::Config;
use citadel_proto::v1::{
    completion_service_client::CompletionServiceClient,
    embedding_service_client::EmbeddingServiceClient, vector_service_client::VectorServiceClient,
};
use citadel_workflows::{
    EventHub, Registry, RetryPolicy, Store, SubmitLimits, Worker, WorkerSettings,
    tasks::{
        CacheWarm, Credentials, EmbedBatch, EmbedSettings, FileRoot, IngestSettings, LlmBatch,
        LlmChain, LlmSettings, Noop, Sleep, VectorIngest,
    },
};
use tokio::{sync::oneshot, task::JoinHandle};

/// The store, its events and the kinds this process knows.
pub struct Workflows {
    pub store: Store,
    pub hub: EventHub,
    pub registry: Registry,
}

impl Workflows {
    /// Connects (running migrations) and starts the event feed. `embeddings_url` is the
    /// EmbeddingService the embedding kinds call.
    pub async fn open(
        config: &Config,
        embeddings_url: &str,
        concurrency: usize,
    ) -> anyhow::Result<Workflows> {
        let ttl = Duration::from_secs(config.workflows.result_ttl_secs);
        // A connection per running task, the API's and the worker's own, and some slack.
        let pool = u32::try_from(concurrency.saturating_mul(2) + 8).unwrap_or(u32::MAX);
        let store = Store::connect(&config.database.url, ttl, pool.max(16))
            .await
            .context("database.url: the workflow store cannot start")?;
        let hub = EventHub::start(&store)
            .await
            .context("database.url: cannot follow workflow events")?;
        let registry = registry(config, embeddings_url)?;
        Ok(Workflows {
            store,
            hub,
            registry,
        })
    }

    /// The workflow core the edges call.
    pub fn core(&self, config: &Config) -> citadel_workflows::Workflows {
        citadel_workflows::Workflows::new(
            self.store.clone(),
            self.hub.clone(),
            self.registry.clone(),
            Self::submit_limits(config),
        )
        .with_watch_buffer(config.workflows.watch_buffer)
    }

    fn submit_limits(config: &Config) -> SubmitLimits {
        let w = &config.workflows;
        SubmitLimits {
            time_limit_ms: w.default_time_limit_ms,
            retry: RetryPolicy {
                max_attempts: w.default_max_attempts,
                initial_backoff_ms: w.default_initial_backoff_ms,
                max_backoff_ms: w.default_max_backoff_ms,
            },
            max_params_bytes: w.max_params_bytes,
            list_page_max_bytes: w.list_page_max_bytes,
        }
    }

    /// Starts a worker; send on the returned switch to drain it.
    pub fn spawn_worker(
        &self,
        config: &Config,
        concurrency: usize,
    ) -> (JoinHandle<()>, oneshot::Sender<()>) {
        let worker = Worker::new(
            self.store.clone(),
            self.hub.clone(),
            self.registry.clone(),
            worker_settings(config, concurrency),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        (task, stop)
    }
}

fn worker_settings(config: &Config, concurrency: usize) -> WorkerSettings {
    let w = &config.workflows;
    let name = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    WorkerSettings {
        name,
        concurrency,
        lease: Duration::from_millis(w.lease_ms),
        heartbeat: Duration::from_millis(w.heartbeat_ms),
        poll_interval: Duration::from_millis(w.poll_interval_ms),
        shutdown_grace: Duration::from_millis(w.shutdown_grace_ms),
    }
}

/// The built-in kinds. New kinds register here.
fn registry(config: &Config, embeddings_url: &str) -> anyhow::Result<Registry> {
    let channel = tonic::transport::Endpoint::from_shared(embeddings_url.to_string())
        .with_context(|| format!("workflows.embeddings_url: bad URL {embeddings_url:?}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy();
    let credentials =
        Credentials::new(config.workflows.api_key.as_deref()).map_err(anyhow::Error::msg)?;
    let channel = tonic::service::interceptor::InterceptedService::new(channel, credentials);
    let max = config.grpc.max_message_bytes;
    let llm = LlmSettings {
        client: CompletionServiceClient::new(channel.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        files: FileRoot::new(&config.workflows.files_dir),
    };
    let v = &config.vectors;
    let ingest = IngestSettings {
        client: VectorServiceClient::new(channel.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        files: FileRoot::new(&config.workflows.files_dir),
        chunk_words: v.chunk_words,
        overlap_words: v.chunk_overlap_words,
        batch: v.ingest_batch,
    };
    let embed = EmbedSettings {
        client: EmbeddingServiceClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        chunk_size: config.workflows.embed_chunk_size,
        files: FileRoot::new(&config.workflows.files_dir),
    };
    let mut registry = Registry::new();
    registry
        .register(Noop)
        .register(Sleep)
        .register(EmbedBatch(embed.clone()))
        .register(CacheWarm(embed))
        .register(LlmBatch(llm.clone()))
        .register(LlmChain(llm))
        .register(VectorIngest(ingest));
    Ok(registry)
}
