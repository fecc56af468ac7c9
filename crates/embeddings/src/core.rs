//! `EmbeddingCore`: the registry of models and the one `embed` every edge calls.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    sync::Semaphore,
    time::{Instant, timeout_at},
};

use crate::{
    Backend, EmbedError, ModelInfo, ModelState, StageTiming, metrics::metrics, postprocess,
};

/// How long an overloaded caller is told to wait before retrying.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Request limits that do not depend on the model.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_inputs_per_request: usize,
}

/// One embedding request, as every edge expresses it.
#[derive(Debug, Clone)]
pub struct EmbedParams {
    pub model: String,
    pub inputs: Vec<String>,
    pub dimensions: Option<u32>,
    pub normalize: bool,
    pub truncate: bool,
    /// When the caller stops waiting (from `grpc-timeout`).
    pub deadline: Option<Instant>,
}

/// The answer: one vector per input, in input order.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Canonical model name (aliases resolved).
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u64,
    pub timing: StageTiming,
    pub total: Duration,
}

/// A model as listed to clients.
#[derive(Debug, Clone)]
pub struct ModelView {
    pub info: ModelInfo,
    pub state: ModelState,
    /// Unix seconds when this process registered the model.
    pub created: i64,
}

struct Entry {
    backend: Arc<dyn Backend>,
    /// One permit per input waiting or running; bounds the model's queue.
    queue: Arc<Semaphore>,
    capacity: usize,
    created: i64,
}

pub struct EmbeddingCore {
    entries: Vec<Entry>,
    /// Canonical names and aliases -> index in `entries`.
    names: HashMap<String, usize>,
    limits: Limits,
}

impl EmbeddingCore {
    pub fn new(limits: Limits) -> Self {
        EmbeddingCore {
            entries: Vec::new(),
            names: HashMap::new(),
            limits,
        }
    }

    /// Adds a model; at most `max_queued_inputs` of its inputs may wait or run at once.
    pub fn register(&mut self, backend: Arc<dyn Backend>, max_queued_inputs: usize) {
        let index = self.entries.len();
        let info = backend.info();
        for name in std::iter::once(&info.name).chain(&info.aliases) {
            self.names.insert(name.clone(), index);
        }
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let capacity = max_queued_inputs.min(Semaphore::MAX_PERMITS);
        let queue = Arc::new(Semaphore::new(capacity));
        self.entries.push(Entry {
            backend,
            queue,
            capacity,
            created,
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
        let result = self.embed_with(entry, params, started).await;
        metrics().request(
            &model,
            result.as_ref().map_or_else(EmbedError::outcome, |_| "ok"),
        );
        if let Ok(done) = &result {
            metrics().embedded(&model, done.vectors.len() as u64, done.prompt_tokens);
        }
        result
    }

    async fn embed_with(
        &self,
        entry: &Entry,
        params: EmbedParams,
        started: Instant,
    ) -> Result<Embedded, EmbedError> {
        let info = entry.backend.info();
        let dims = self.validate(info, entry.capacity, &params)?;
        match entry.backend.state() {
            ModelState::Ready => {}
            ModelState::Loading => return Err(unavailable(info, "the model is still loading")),
            ModelState::Failed(reason) => return Err(unavailable(info, &reason)),
        }
        let n = params.inputs.len();
        let _permits = entry
            .queue
            .clone()
            .try_acquire_many_owned(n as u32)
            .map_err(|_| EmbedError::Overloaded {
                model: info.name.clone(),
                queued: entry.capacity - entry.queue.available_permits(),
                retry_after: RETRY_AFTER,
            })?;

        let work = entry.backend.embed(params.inputs, params.truncate);
        let output =
            match params.deadline {
                Some(deadline) => timeout_at(deadline, work).await.map_err(|_| {
                    EmbedError::DeadlineExceeded {
                        elapsed: started.elapsed(),
                    }
                })??,
                None => work.await?,
            };
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
        Ok(Embedded {
            model: info.name.clone(),
            vectors,
            prompt_tokens: output.prompt_tokens,
            timing: output.timing,
            total: started.elapsed(),
        })
    }

    /// Checks the request against the model; returns the output dimension.
    fn validate(
        &self,
        info: &ModelInfo,
        capacity: usize,
        p: &EmbedParams,
    ) -> Result<usize, EmbedError> {
        let max = self.limits.max_inputs_per_request;
        if p.inputs.is_empty() {
            return Err(EmbedError::invalid(
                "input",
                "input must not be empty: send at least one string",
            ));
        }
        if p.inputs.len() > max {
            let msg = format!(
                "input has {} items; at most {max} are allowed per request",
                p.inputs.len()
            );
            return Err(EmbedError::invalid("input", msg));
        }
        if p.inputs.len() > capacity {
            let msg = format!(
                "input has {} items but model `{}` queues at most {capacity}: split the request",
                p.inputs.len(),
                info.name
            );
            return Err(EmbedError::invalid("input", msg));
        }
        if let Some(i) = p.inputs.iter().position(|s| s.is_empty()) {
            let msg = format!("input[{i}] is an empty string; every input must contain text");
            return Err(EmbedError::invalid("input", msg));
        }
        match p.dimensions {
            None => Ok(info.dimensions as usize),
            Some(d) if d >= 1 && d <= info.dimensions => Ok(d as usize),
            Some(d) => {
                let msg = format!(
                    "dimensions must be between 1 and {} for model `{}`, got {d}",
                    info.dimensions, info.name
                );
                Err(EmbedError::invalid("dimensions", msg))
            }
        }
    }

    fn entry(&self, name: &str) -> Result<&Entry, EmbedError> {
        self.names
            .get(name)
            .map(|&i| &self.entries[i])
            .ok_or_else(|| EmbedError::ModelNotFound(name.to_string()))
    }

    pub fn models(&self) -> Vec<ModelView> {
        self.entries.iter().map(view).collect()
    }

    pub fn model(&self, name: &str) -> Result<ModelView, EmbedError> {
        self.entry(name).map(view)
    }

    /// Waits until every model has finished loading. Returns the first model that failed.
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

fn view(entry: &Entry) -> ModelView {
    ModelView {
        info: entry.backend.info().clone(),
        state: entry.backend.state(),
        created: entry.created,
    }
}

fn unavailable(info: &ModelInfo, reason: &str) -> EmbedError {
    EmbedError::Unavailable {
        model: info.name.clone(),
        reason: reason.to_string(),
    }
}
