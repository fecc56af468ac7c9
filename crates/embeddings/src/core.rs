//! `EmbeddingCore`: the registry of models and the one `embed` every edge calls.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tracing::Instrument;

use tokio::{
    sync::Semaphore,
    time::{Instant, timeout_at},
};

use crate::{
    Backend, BackendRequest, EmbedError, EndpointView, ModelInfo, ModelState, StageTiming,
    cache::{CachePolicy, CacheStatus, EmbeddingCache},
    flight::Flights,
    metrics::metrics,
    postprocess,
    validate::{prompt_prefix, validate},
};

/// How long an overloaded caller is told to wait before retrying.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Fraction of a model's queue one request may hold while other requests are queued: a bulk
/// request cannot take all that is left, so later callers still find room. Alone, a request may
/// use the whole queue (refusing it then would only make the model idle).
const REQUEST_SHARE: (usize, usize) = (1, 2);

/// Longest model name looked up; no model has a longer one, and errors quote names.
const MAX_MODEL_NAME_BYTES: usize = 256;

/// Request limits that do not depend on the model.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_inputs_per_request: usize,
}

/// What the core adds to a backend when it registers a model.
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    /// Inputs that may wait or run at once; past it, requests are refused with `Overloaded`.
    pub max_queued_inputs: usize,
    /// Named prompt prefixes, e.g. ("query", "search_query: ").
    pub prompts: Vec<(String, String)>,
    /// The prompt used when a request names none.
    pub default_prompt: Option<String>,
    /// Model to serve instead when this one is `Unavailable` (same dimensions).
    pub fallback: Option<String>,
}

/// One embedding request, as every edge expresses it.
#[derive(Debug, Clone)]
pub struct EmbedParams {
    pub model: String,
    pub inputs: Vec<String>,
    pub dimensions: Option<u32>,
    pub normalize: bool,
    pub truncate: bool,
    /// A prompt configured for the model (`query`, `document`, ...).
    pub prompt_name: Option<String>,
    pub cache_policy: CachePolicy,
    /// When the caller stops waiting (from `grpc-timeout`).
    pub deadline: Option<Instant>,
}

/// The answer: one vector per input, in input order.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Canonical name of the model that produced the vectors (the fallback's, if it served).
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of the inputs (a cached input reports what it counted when computed).
    pub prompt_tokens: u64,
    pub timing: StageTiming,
    pub total: Duration,
    /// Inputs served from the cache.
    pub cached: usize,
}

/// A model as listed to clients.
#[derive(Debug, Clone)]
pub struct ModelView {
    pub info: ModelInfo,
    pub state: ModelState,
    /// Unix seconds when this process registered the model.
    pub created: i64,
    pub endpoints: Vec<EndpointView>,
    pub prompt_names: Vec<String>,
    pub default_prompt: Option<String>,
    pub fallback: Option<String>,
}

pub(crate) struct Entry {
    pub(crate) backend: Arc<dyn Backend>,
    /// One permit per input waiting or running; bounds the model's queue.
    queue: Arc<Semaphore>,
    pub(crate) capacity: usize,
    created: i64,
    pub(crate) options: ModelOptions,
}

pub struct EmbeddingCore {
    entries: Vec<Entry>,
    /// Canonical names and aliases -> index in `entries`.
    names: HashMap<String, usize>,
    pub(crate) limits: Limits,
    pub(crate) cache: Option<Arc<dyn EmbeddingCache>>,
    pub(crate) flights: Arc<Flights>,
}

impl EmbeddingCore {
    pub fn new(limits: Limits) -> Self {
        EmbeddingCore {
            entries: Vec::new(),
            names: HashMap::new(),
            limits,
            cache: None,
            flights: Arc::default(),
        }
    }

    /// Puts `cache` in front of every model.
    pub fn set_cache(&mut self, cache: Arc<dyn EmbeddingCache>) {
        self.cache = Some(cache);
    }

    pub fn cache_status(&self) -> Option<CacheStatus> {
        self.cache.as_ref().map(|c| c.status())
    }

    /// The cache in front of the models, for maintenance (a flush); `None` without one.
    pub fn cache(&self) -> Option<&Arc<dyn EmbeddingCache>> {
        self.cache.as_ref()
    }

    /// Adds a model with its queue bound, prompts and fallback.
    pub fn register(&mut self, backend: Arc<dyn Backend>, options: ModelOptions) {
        let index = self.entries.len();
        let info = backend.info();
        for name in std::iter::once(&info.name).chain(&info.aliases) {
            self.names.insert(name.clone(), index);
        }
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let capacity = options.max_queued_inputs.min(Semaphore::MAX_PERMITS);
        let queue = Arc::new(Semaphore::new(capacity));
        self.entries.push(Entry {
            backend,
            queue,
            capacity,
            created,
            options,
        });
    }

    pub async fn embed(&self, params: EmbedParams) -> Result<Embedded, EmbedError> {
        let started = Instant::now();
        let entry = match self.entry(&params.model) {
            Ok(entry) => entry,
            Err(error) => {
                // Unknown names are caller input: never a metric label value.
                metrics().request("unknown", error.outcome());
                return Err(error);
            }
        };
        let model = entry.backend.info().name.clone();
        let span =
            citadel_telemetry::trace_span!("embed", model = %model, inputs = params.inputs.len());
        let mut result = self
            .embed_with(entry, &params, started)
            .instrument(span)
            .await;
        if let (Err(EmbedError::Unavailable { reason, .. }), Some(fallback)) =
            (&result, self.fallback_of(entry))
        {
            let to = fallback.backend.info().name.clone();
            tracing::warn!(%model, fallback = %to, %reason, "serving from the fallback model");
            metrics().fallback(&model, &to);
            result = self.embed_with(fallback, &params, started).await;
        }
        metrics().request(
            &model,
            result.as_ref().map_or_else(EmbedError::outcome, |_| "ok"),
        );
        if let Ok(done) = &result {
            metrics().embedded(&done.model, done.vectors.len() as u64, done.prompt_tokens);
        }
        result
    }

    async fn embed_with(
        &self,
        entry: &Entry,
        params: &EmbedParams,
        started: Instant,
    ) -> Result<Embedded, EmbedError> {
        let info = entry.backend.info();
        let dims = validate(&self.limits, info, entry.capacity, params)?;
        let options = &entry.options;
        let prefix = prompt_prefix(
            &info.name,
            &options.prompts,
            options.default_prompt.as_deref(),
            params.prompt_name.as_deref(),
        )?;
        match entry.backend.state() {
            // A remote model with every breaker open still gets the call: its router decides
            // between a half-open trial and a fast refusal.
            ModelState::Ready | ModelState::Unavailable(_) => {}
            ModelState::Loading => return Err(unavailable(info, "the model is still loading")),
            ModelState::Failed(reason) => return Err(unavailable(info, &reason)),
        }
        let work = self.serve(entry, params, dims, prefix);
        let served =
            match params.deadline {
                Some(deadline) => timeout_at(deadline, work).await.map_err(|_| {
                    EmbedError::DeadlineExceeded {
                        elapsed: started.elapsed(),
                    }
                })??,
                None => work.await?,
            };
        Ok(Embedded {
            model: info.name.clone(),
            vectors: served.vectors,
            prompt_tokens: served.prompt_tokens,
            timing: served.timing,
            total: started.elapsed(),
            cached: served.cached,
        })
    }

    /// Runs `inputs` (prefixed) through the model, holding one queue permit per input, and
    /// shapes the vectors: the first `dims` components, L2-normalised if asked.
    pub(crate) async fn compute(
        &self,
        entry: &Entry,
        params: &EmbedParams,
        inputs: Vec<String>,
        dims: usize,
    ) -> Result<Computed, EmbedError> {
        let info = entry.backend.info();
        let n = inputs.len();
        let overloaded = || EmbedError::Overloaded {
            model: info.name.clone(),
            queued: entry.capacity - entry.queue.available_permits(),
            retry_after: RETRY_AFTER,
        };
        let permits = entry
            .queue
            .clone()
            .try_acquire_many_owned(n as u32)
            .map_err(|_| overloaded())?;
        // Checked once the permits are held, so two large requests arriving together cannot
        // both see an empty queue; at worst both are refused and retry.
        let others = (entry.capacity - entry.queue.available_permits()).saturating_sub(n);
        if others > 0 && n > entry.capacity * REQUEST_SHARE.0 / REQUEST_SHARE.1 {
            let error = overloaded();
            drop(permits);
            return Err(error);
        }
        let _permits = permits;
        let request_inputs: Vec<usize> = inputs.iter().map(String::len).collect();
        let request = BackendRequest {
            inputs,
            truncate: params.truncate,
            deadline: params.deadline,
        };
        // The backend traces its own work (`model.run` in process, `upstream.attempt` remote).
        let output = entry.backend.embed(request).await?;
        if output.vectors.len() != n
            || output
                .vectors
                .iter()
                .any(|v| v.len() != info.dimensions as usize)
        {
            let message = format!(
                "returned {} vectors of the wrong shape",
                output.vectors.len()
            );
            return Err(EmbedError::Backend {
                model: info.name.clone(),
                message,
            });
        }
        let mut vectors = output.vectors;
        for v in &mut vectors {
            // Keep the first `dims` components, as OpenAI's `dimensions` and Ollama do.
            v.truncate(dims);
            if params.normalize {
                postprocess::l2_normalize(v);
            }
        }
        let input_tokens = match output.input_tokens.len() == n {
            true => output.input_tokens,
            false => share_tokens(output.prompt_tokens, &request_inputs),
        };
        Ok(Computed {
            vectors,
            prompt_tokens: output.prompt_tokens,
            input_tokens,
            timing: output.timing,
        })
    }

    fn entry(&self, name: &str) -> Result<&Entry, EmbedError> {
        if name.len() > MAX_MODEL_NAME_BYTES {
            return Err(EmbedError::InvalidInput {
                param: "model",
                message: format!(
                    "the model name is {} bytes; names are at most {MAX_MODEL_NAME_BYTES}",
                    name.len()
                ),
            });
        }
        self.names
            .get(name)
            .map(|&i| &self.entries[i])
            .ok_or_else(|| EmbedError::ModelNotFound(crate::error::quote(name)))
    }

    fn fallback_of(&self, entry: &Entry) -> Option<&Entry> {
        let name = entry.options.fallback.as_deref()?;
        self.entry(name).ok()
    }

    pub fn models(&self) -> Vec<ModelView> {
        self.entries.iter().map(view).collect()
    }

    pub fn model(&self, name: &str) -> Result<ModelView, EmbedError> {
        self.entry(name).map(view)
    }

    /// Follows one model's state (for per-model health). `None` for an unknown name.
    pub fn watch_state(&self, name: &str) -> Option<tokio::sync::watch::Receiver<ModelState>> {
        self.entry(name).ok().map(|e| e.backend.watch_state())
    }

    /// Waits until every model has finished loading. Returns the first model that failed.
    /// A remote model whose servers are down is not a load failure: it serves once they answer.
    pub async fn wait_ready(&self) -> Result<(), (String, String)> {
        for entry in &self.entries {
            let mut rx = entry.backend.watch_state();
            let state = rx
                .wait_for(|s| *s != ModelState::Loading)
                .await
                .map(|s| s.clone())
                .unwrap_or_else(|_| ModelState::Failed("the backend stopped".into()));
            if let ModelState::Failed(reason) = state {
                return Err((entry.backend.info().name.clone(), reason));
            }
        }
        Ok(())
    }

    /// Stops every backend from taking new work.
    pub fn close(&self) {
        self.entries.iter().for_each(|e| e.backend.close());
    }
}

/// Shaped vectors fresh from a backend.
pub(crate) struct Computed {
    pub(crate) vectors: Vec<Vec<f32>>,
    pub(crate) prompt_tokens: u64,
    /// Per input: what a cached copy will report as its usage.
    pub(crate) input_tokens: Vec<u32>,
    pub(crate) timing: StageTiming,
}

/// Shares `total` tokens out over inputs in proportion to their byte lengths, summing exactly to
/// `total` (largest remainder). For backends that count tokens per call only.
fn share_tokens(total: u64, lengths: &[usize]) -> Vec<u32> {
    let bytes: u64 = lengths.iter().map(|&l| l as u64).sum::<u64>().max(1);
    let mut shares: Vec<(u64, u64, usize)> = lengths
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let exact = u128::from(total) * l as u128;
            let bytes = u128::from(bytes);
            ((exact / bytes) as u64, (exact % bytes) as u64, i)
        })
        .collect();
    let mut left = total - shares.iter().map(|s| s.0).sum::<u64>();
    shares.sort_by_key(|s| std::cmp::Reverse(s.1));
    for share in &mut shares {
        if left == 0 {
            break;
        }
        share.0 += 1;
        left -= 1;
    }
    shares.sort_by_key(|s| s.2);
    shares
        .into_iter()
        .map(|s| u32::try_from(s.0).unwrap_or(u32::MAX))
        .collect()
}

fn view(entry: &Entry) -> ModelView {
    ModelView {
        info: entry.backend.info().clone(),
        state: entry.backend.state(),
        created: entry.created,
        endpoints: entry.backend.endpoints(),
        prompt_names: entry
            .options
            .prompts
            .iter()
            .map(|(n, _)| n.clone())
            .collect(),
        default_prompt: entry.options.default_prompt.clone(),
        fallback: entry.options.fallback.clone(),
    }
}

fn unavailable(info: &ModelInfo, reason: &str) -> EmbedError {
    EmbedError::Unavailable {
        model: info.name.clone(),
        reason: reason.to_string(),
        retry_after: None,
    }
}
