//! `RemoteModel`: one embedding model over its upstream servers, behind the core's `Backend`.
//! The routing core chooses and retries; this file builds the calls and reads the answers.
//! The servers can be replaced while the model serves (`replace_endpoints`, a configuration
//! reload): a request keeps the router it started on, the next one takes the new set.

use std::{
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use citadel_embeddings::{
    Backend, BackendOutput, BackendRequest, EmbedError, EndpointView, ModelInfo, ModelState,
    StageTiming,
};
use citadel_routing::{
    Attempt, AttemptError, ClientPool, Probe, RouteError, Router, RouterSettings,
};
use futures_util::{FutureExt, StreamExt, TryStreamExt, stream};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use crate::{Protocol, RemoteSettings, wire::Answer};

const PROBE_TEXT: &str = "citadel health probe";

pub struct RemoteModel {
    info: ModelInfo,
    batch_size: usize,
    chunk_concurrency: usize,
    attempt_timeout: Duration,
    recipe: Recipe,
    routed: RwLock<Arc<Routed>>,
    /// The current router's state, mirrored: watchers of the model outlive a replaced router.
    state: watch::Sender<ModelState>,
    /// Which router's mirror may write `state`: bumped before a new one is built, so a
    /// replaced router's last transitions never land after the new router's.
    generation: Arc<AtomicU64>,
    /// Set by `close` (shutdown): no new router, so no new probes, after it.
    closed: AtomicBool,
}

/// What a router over a set of servers is built with, at start and on every replacement.
struct Recipe {
    protocol: Protocol,
    upstream_model: String,
    dimensions: usize,
    attempt_timeout: Duration,
    probe_interval: Option<Duration>,
    clients: ClientPool,
}

/// One set of servers: its router, the calls built for it, and the task mirroring its state
/// into the model's.
struct Routed {
    router: Arc<Router>,
    call: Arc<EmbedCall>,
    mirror: JoinHandle<()>,
}

impl Drop for Routed {
    fn drop(&mut self) {
        // The router stops its probes itself when the last request on it is done.
        self.mirror.abort();
    }
}

/// What one attempt needs, shared with the probes (which must not keep the model alive).
struct EmbedCall {
    protocol: Protocol,
    upstream_model: String,
    dimensions: usize,
    /// The embedding URL of each endpoint, by its index in the router.
    urls: Vec<reqwest::Url>,
}

impl EmbedCall {
    fn body(&self, inputs: &[String], truncate: bool) -> bytes::Bytes {
        let body = self
            .protocol
            .request_body(&self.upstream_model, inputs, truncate);
        bytes::Bytes::from(body)
    }

    /// POSTs `body` to the attempt's endpoint and parses the answer strictly.
    async fn run(
        &self,
        attempt: Attempt,
        body: bytes::Bytes,
        count: usize,
    ) -> Result<Answer, AttemptError> {
        let endpoint = &attempt.endpoint;
        let request = endpoint
            .request(reqwest::Method::POST, self.urls[attempt.index].clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = endpoint.send(request, attempt.limit).await?;
        let limit = count * self.dimensions * 32 + 64 * 1024;
        let bytes = response.bytes(limit).await?;
        self.protocol
            .parse_answer(&bytes, count, self.dimensions)
            .map_err(AttemptError::Malformed)
    }
}

impl Recipe {
    /// A router over `settings`' endpoints, its calls, its probes, and a task mirroring its
    /// state into `state`; needs a Tokio runtime.
    fn route(
        &self,
        settings: RouterSettings,
        state: &watch::Sender<ModelState>,
        generation: &Arc<AtomicU64>,
    ) -> Result<Routed, String> {
        let router = Arc::new(Router::new(settings, &self.clients)?);
        let urls = router
            .endpoints()
            .iter()
            .map(|e| {
                let url = self.protocol.embed_url(e.base().as_str());
                reqwest::Url::parse(&url)
                    .map_err(|err| format!("`{url}` is not a valid URL: {err}"))
            })
            .collect::<Result<_, _>>()?;
        let call = Arc::new(EmbedCall {
            protocol: self.protocol,
            upstream_model: self.upstream_model.clone(),
            dimensions: self.dimensions,
            urls,
        });
        if let Some(interval) = self.probe_interval {
            let probe_call = call.clone();
            let probe: Probe = Arc::new(move |attempt| {
                let call = probe_call.clone();
                async move {
                    let body = call.body(&[PROBE_TEXT.to_string()], true);
                    call.run(attempt, body, 1).await.map(drop)
                }
                .boxed()
            });
            router.start_probes(interval, self.attempt_timeout, probe);
        }
        let mut changes = router.watch_state();
        let (state, generation) = (state.clone(), Arc::clone(generation));
        let mine = generation.load(Ordering::SeqCst);
        let mirror = tokio::spawn(async move {
            loop {
                let now = changes.borrow_and_update().clone();
                // Checked inside the sender's lock: no write after a newer router's.
                state.send_if_modified(|held| {
                    let current = generation.load(Ordering::SeqCst) == mine;
                    if current {
                        *held = now;
                    }
                    current
                });
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Routed {
            router,
            call,
            mirror,
        })
    }
}

impl RemoteModel {
    /// Builds the model's router and starts its probes; needs a Tokio runtime.
    pub fn start(settings: RemoteSettings, clients: &ClientPool) -> Result<Arc<Self>, String> {
        let recipe = Recipe {
            protocol: settings.protocol,
            upstream_model: settings.upstream_model,
            dimensions: settings.info.dimensions as usize,
            attempt_timeout: settings.attempt_timeout,
            probe_interval: settings.probe_interval,
            clients: clients.clone(),
        };
        let (state, _) = watch::channel(ModelState::Ready);
        let generation = Arc::new(AtomicU64::new(0));
        let routed = recipe.route(settings.router, &state, &generation)?;
        Ok(Arc::new(RemoteModel {
            info: settings.info,
            batch_size: settings.batch_size.max(1),
            chunk_concurrency: settings.chunk_concurrency.max(1),
            attempt_timeout: settings.attempt_timeout,
            recipe,
            routed: RwLock::new(Arc::new(routed)),
            state,
            generation,
            closed: AtomicBool::new(false),
        }))
    }

    /// Serves the next requests from `router`'s servers (a configuration reload). Requests in
    /// flight finish on the servers they started with. The new servers start afresh: closed
    /// breakers, no latency estimate. An error (no endpoint, a bad URL) leaves the old set.
    pub fn replace_endpoints(&self, router: RouterSettings) -> Result<(), String> {
        if self.closed.load(Ordering::SeqCst) {
            return Err("the model is shutting down".to_string());
        }
        // From here the old router's mirror writes nothing more, even before it is aborted.
        let before = self.generation.fetch_add(1, Ordering::SeqCst);
        let routed = match self.recipe.route(router, &self.state, &self.generation) {
            Ok(routed) => Arc::new(routed),
            Err(e) => {
                // The old router stays: its mirror speaks for the model again.
                self.generation.store(before, Ordering::SeqCst);
                self.state.send_replace(self.routed().router.state());
                return Err(e);
            }
        };
        let old = std::mem::replace(
            &mut *self.routed.write().unwrap_or_else(PoisonError::into_inner),
            routed,
        );
        // Its state no longer speaks for the model, even while old requests still use it.
        old.mirror.abort();
        Ok(())
    }

    fn routed(&self) -> Arc<Routed> {
        Arc::clone(&self.routed.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// One chunk, routed with retries across endpoints.
    async fn embed_chunk(
        &self,
        routed: &Routed,
        inputs: &[String],
        truncate: bool,
        deadline: Option<Instant>,
    ) -> Result<Answer, EmbedError> {
        let body = routed.call.body(inputs, truncate);
        let (name, count) = (&self.info.name, inputs.len());
        routed
            .router
            .call(name, None, deadline, self.attempt_timeout, |attempt| {
                routed.call.run(attempt, body.clone(), count)
            })
            .await
            .map_err(|e| self.embed_error(e))
    }

    /// The one mapping of a routing failure to the embedding core's error.
    fn embed_error(&self, error: RouteError) -> EmbedError {
        let model = self.info.name.clone();
        match error {
            RouteError::Refused { endpoint, error } => EmbedError::InvalidInput {
                param: "input",
                message: format!("model `{model}`: upstream {endpoint} refused the input: {error}"),
            },
            RouteError::Unavailable {
                reason,
                retry_after,
                ..
            } => EmbedError::Unavailable {
                model,
                reason,
                retry_after,
            },
            RouteError::Upstream { endpoint, error } => EmbedError::Upstream {
                model,
                endpoint,
                message: error.to_string(),
            },
            RouteError::DeadlineExceeded { elapsed } => EmbedError::DeadlineExceeded { elapsed },
        }
    }
}

#[async_trait]
impl Backend for RemoteModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn state(&self) -> ModelState {
        self.state.borrow().clone()
    }

    fn watch_state(&self) -> watch::Receiver<ModelState> {
        self.state.subscribe()
    }

    /// Splits the inputs into chunks of `batch_size`, sends up to `chunk_concurrency` at once,
    /// and reassembles the vectors in input order. One failed chunk fails the request (and
    /// drops the chunks still in flight).
    async fn embed(&self, request: BackendRequest) -> Result<BackendOutput, EmbedError> {
        let started = Instant::now();
        let (truncate, deadline) = (request.truncate, request.deadline);
        let routed = self.routed();
        // Futures do nothing until polled: `buffered` starts at most `chunk_concurrency`.
        let chunks: Vec<_> = request
            .inputs
            .chunks(self.batch_size)
            .map(|chunk| self.embed_chunk(&routed, chunk, truncate, deadline))
            .collect();
        let answers: Vec<Answer> = stream::iter(chunks)
            .buffered(self.chunk_concurrency)
            .try_collect()
            .await?;
        let mut output = BackendOutput {
            vectors: Vec::with_capacity(request.inputs.len()),
            prompt_tokens: 0,
            // Servers count tokens per call, not per input: the core shares them out.
            input_tokens: Vec::new(),
            timing: StageTiming {
                inference: started.elapsed(),
                ..StageTiming::default()
            },
        };
        for answer in answers {
            output.vectors.extend(answer.vectors);
            output.prompt_tokens = output.prompt_tokens.saturating_add(answer.prompt_tokens);
        }
        Ok(output)
    }

    fn endpoints(&self) -> Vec<EndpointView> {
        self.routed().router.views()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.routed().router.close();
    }
}
