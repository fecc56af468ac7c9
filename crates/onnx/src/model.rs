//! `OnnxModel`: a model directory loaded in the background and served through the batcher.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    thread,
    time::Instant,
};

use async_trait::async_trait;
use citadel_embeddings::{
    Backend, BackendOutput, BackendRequest, EmbedError, ModelInfo, ModelState, StageTiming,
};
use tokio::sync::watch;
use tracing::Instrument;

use crate::{
    OnnxError,
    batcher::{BatchSettings, Batcher, RunError},
    session::ModelSession,
    tokenize::TextTokenizer,
};

/// Inputs whose text is longer than this in total are tokenized off the async runtime.
const INLINE_TOKENIZE_BYTES: usize = 8 * 1024;

/// How to load and run one in-process model.
#[derive(Debug, Clone)]
pub struct OnnxModelSettings {
    pub info: ModelInfo,
    /// Holds the graph and `tokenizer.json`.
    pub dir: PathBuf,
    /// The graph's file name inside `dir` (`model.onnx`, `model.int8.onnx`).
    pub graph: String,
    pub sessions: usize,
    pub intra_threads: usize,
    pub max_batch_tokens: usize,
    /// Most tokens in one window; 0 picks `BatchSettings::new`'s default.
    pub max_window_tokens: usize,
}

struct Loaded {
    tokenizer: Arc<TextTokenizer>,
    batcher: Batcher,
}

pub struct OnnxModel {
    info: ModelInfo,
    state: watch::Sender<ModelState>,
    loaded: Arc<OnceLock<Loaded>>,
}

impl OnnxModel {
    async fn run(&self, request: BackendRequest) -> Result<BackendOutput, EmbedError> {
        let BackendRequest {
            inputs, truncate, ..
        } = request;
        let loaded = self.loaded.get().ok_or_else(|| EmbedError::Unavailable {
            model: self.info.name.clone(),
            reason: "the model is still loading".into(),
            retry_after: None,
        })?;
        let started = Instant::now();
        let ids = if inputs.iter().map(String::len).sum::<usize>() <= INLINE_TOKENIZE_BYTES {
            loaded.tokenizer.encode(&inputs, truncate)?
        } else {
            let tokenizer = loaded.tokenizer.clone();
            tokio::task::spawn_blocking(move || tokenizer.encode(&inputs, truncate))
                .await
                .map_err(|e| self.failed(&format!("tokenizer task: {e}")))??
        };
        let tokenize = started.elapsed();
        let input_tokens: Vec<u32> = ids.iter().map(|v| v.len() as u32).collect();
        let prompt_tokens = input_tokens.iter().map(|&n| u64::from(n)).sum();

        let finished = loaded
            .batcher
            .submit(ids)
            .await
            .map_err(|_| self.failed("the model worker stopped"))?
            .map_err(|e| match e {
                RunError::ShuttingDown => EmbedError::Unavailable {
                    model: self.info.name.clone(),
                    reason: "the server is shutting down".into(),
                    retry_after: None,
                },
                RunError::Failed(message) => self.failed(&message),
            })?;
        Ok(BackendOutput {
            vectors: finished.vectors,
            prompt_tokens,
            input_tokens,
            timing: StageTiming {
                tokenize,
                queue: finished.queue,
                inference: finished.inference,
            },
        })
    }

    /// Checks the model files and loads ONNX Runtime from `runtime_library` now (so a missing
    /// model is one clear error at start-up), then loads the sessions on a background thread;
    /// the state turns `Ready` when done.
    pub fn start(
        settings: OnnxModelSettings,
        runtime_library: &Path,
    ) -> Result<Arc<Self>, OnnxError> {
        for file in [settings.graph.as_str(), "tokenizer.json"] {
            if !settings.dir.join(file).is_file() {
                return Err(OnnxError::ModelFilesMissing {
                    dir: settings.dir.display().to_string(),
                    file: file.to_string(),
                });
            }
        }
        check_position_limit(&settings)?;
        crate::runtime::init_runtime(runtime_library)?;
        let (state, _) = watch::channel(ModelState::Loading);
        let model = Arc::new(OnnxModel {
            info: settings.info.clone(),
            state,
            loaded: Arc::default(),
        });
        let (loaded, state) = (model.loaded.clone(), model.state.clone());
        let spawned = thread::Builder::new().name("citadel-onnx-load".into()).spawn(move || {
            let started = Instant::now();
            match load(&settings) {
                Ok(ready) => {
                    let _ = loaded.set(ready);
                    tracing::info!(model = %settings.info.name, ms = started.elapsed().as_millis() as u64, "model loaded");
                    state.send_replace(ModelState::Ready);
                }
                Err(e) => {
                    tracing::error!(model = %settings.info.name, error = %e, "model failed to load");
                    state.send_replace(ModelState::Failed(e.to_string()));
                }
            }
        });
        if let Err(e) = spawned {
            model.state.send_replace(ModelState::Failed(format!(
                "could not start the loader: {e}"
            )));
        }
        Ok(model)
    }
}

/// The graph has `max_position_embeddings` positions (config.json); longer inputs would fail
/// inside ONNX Runtime, so a larger `max_input_tokens` is refused at start-up.
fn check_position_limit(settings: &OnnxModelSettings) -> Result<(), OnnxError> {
    #[derive(serde::Deserialize)]
    struct BertConfig {
        max_position_embeddings: u32,
    }
    let path = settings.dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let positions = serde_json::from_str::<BertConfig>(&text)
        .map(|c| c.max_position_embeddings)
        .map_err(|e| OnnxError::ModelConfig {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    if settings.info.max_input_tokens > positions {
        return Err(OnnxError::TooManyTokens {
            model: settings.info.name.clone(),
            configured: settings.info.max_input_tokens,
            positions,
        });
    }
    Ok(())
}

fn load(settings: &OnnxModelSettings) -> Result<Loaded, OnnxError> {
    let max_tokens = settings.info.max_input_tokens as usize;
    let tokenizer = TextTokenizer::load(&settings.dir.join("tokenizer.json"), max_tokens)?;
    let graph = settings.dir.join(&settings.graph);
    let dims = settings.info.dimensions as usize;
    let sessions = (0..settings.sessions)
        .map(|_| ModelSession::load(&graph, settings.intra_threads, dims))
        .collect::<Result<Vec<_>, _>>()?;
    let mut batch = BatchSettings::new(settings.max_batch_tokens, sessions.len());
    if settings.max_window_tokens > 0 {
        batch.max_window_tokens = settings.max_window_tokens;
    }
    let batcher = Batcher::start(sessions, batch, &settings.info.name)
        .map_err(|e| OnnxError::Workers(e.to_string()))?;
    Ok(Loaded {
        tokenizer: Arc::new(tokenizer),
        batcher,
    })
}

#[async_trait]
impl Backend for OnnxModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn state(&self) -> ModelState {
        self.state.borrow().clone()
    }

    fn watch_state(&self) -> watch::Receiver<ModelState> {
        self.state.subscribe()
    }

    async fn embed(&self, request: BackendRequest) -> Result<BackendOutput, EmbedError> {
        // Traces only (`citadel_telemetry::trace::TARGET`, which the logs leave out): the
        // tokenizer, the batcher's queue and the run, as one span; a remote backend's router
        // opens its own per attempt.
        let span = tracing::info_span!(target: "citadel::trace", "model.run", backend = "onnx",
            inputs = request.inputs.len());
        self.run(request).instrument(span).await
    }

    fn close(&self) {
        if let Some(loaded) = self.loaded.get() {
            loaded.batcher.close();
        }
    }
}

impl OnnxModel {
    fn failed(&self, message: &str) -> EmbedError {
        EmbedError::Backend {
            model: self.info.name.clone(),
            message: message.to_string(),
        }
    }
}
