//! Configuration -> the embedding core: one backend per enabled model (in process on ONNX
//! Runtime, or routed to Ollama / OpenAI-compatible servers), with its queue, prompts and
//! fallback, and the two-level cache in front of them all.

use std::{collections::HashMap, sync::Arc, time::Duration};

use citadel_cache::{CacheSettings, TwoLevelCache};

use citadel_config::{
    BackendKind, CacheModeConfig, Config, EndpointConfig, ModelConfig, UpstreamConfig,
};
use citadel_embeddings::{CacheMode, EmbeddingCore, Limits, ModelInfo, ModelOptions};
use citadel_onnx::{OnnxModel, OnnxModelSettings};
use citadel_remote_embeddings::{Protocol, RemoteModel, RemoteSettings};
use citadel_routing::{
    BreakerPolicy, ClientPool, EndpointSettings, RetryPolicy, RouterSettings, Timeouts,
};

/// The remote models by name, whose servers a configuration reload can replace.
pub(crate) type RemoteModels = HashMap<String, Arc<RemoteModel>>;

pub(crate) fn build_core(config: &Config) -> anyhow::Result<(EmbeddingCore, RemoteModels)> {
    let mut core = EmbeddingCore::new(Limits {
        max_inputs_per_request: config.embeddings.max_inputs_per_request,
    });
    if let Some(cache) = cache(config)? {
        core.set_cache(Arc::new(cache));
    }
    let clients = ClientPool::new(config.upstream.pool_max_idle_per_host);
    let mut remote = RemoteModels::new();
    for (name, model) in config.models.iter().filter(|(_, m)| m.enabled) {
        match model.backend {
            BackendKind::Onnx => {
                let backend =
                    OnnxModel::start(onnx_settings(name, model), &config.onnx.library_path)?;
                core.register(backend, model_options(model));
            }
            BackendKind::Ollama | BackendKind::Openai => {
                let settings = remote_settings(name, model, &config.upstream);
                let backend = RemoteModel::start(settings, &clients)
                    .map_err(|e| anyhow::anyhow!("models.{name}.endpoints: {e}"))?;
                remote.insert(name.clone(), backend.clone());
                core.register(backend, model_options(model));
            }
        }
    }
    Ok((core, remote))
}

/// `model`'s servers under `upstream`'s retry and breaker policy, as its router takes them.
pub(crate) fn remote_router(
    name: &str,
    model: &ModelConfig,
    upstream: &UpstreamConfig,
) -> RouterSettings {
    remote_settings(name, model, upstream).router
}

/// The two-level cache, unless `cache.mode` is off.
fn cache(config: &Config) -> anyhow::Result<Option<TwoLevelCache>> {
    let c = &config.cache;
    let mode = match c.mode {
        CacheModeConfig::On => CacheMode::On,
        CacheModeConfig::Off => return Ok(None),
        CacheModeConfig::ReadOnly => CacheMode::ReadOnly,
        CacheModeConfig::WriteOnly => CacheMode::WriteOnly,
    };
    let settings = CacheSettings {
        mode,
        ttl: Duration::from_secs(c.ttl_secs),
        l1_max_bytes: c.l1_max_bytes,
        redis_url: (!c.redis_url.is_empty()).then(|| c.redis_url.clone()),
        redis_timeout: Duration::from_millis(c.redis_timeout_ms),
        key_prefix: c.key_prefix.clone(),
    };
    TwoLevelCache::new(settings)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn remote_settings(name: &str, model: &ModelConfig, upstream: &UpstreamConfig) -> RemoteSettings {
    let protocol = match model.backend {
        BackendKind::Ollama => Protocol::Ollama,
        _ => Protocol::OpenAi,
    };
    let defaults = Timeouts {
        connect: Duration::from_millis(upstream.connect_timeout_ms),
        first_byte: Duration::from_millis(upstream.first_byte_timeout_ms),
        idle: Duration::from_millis(upstream.idle_timeout_ms),
    };
    let endpoints = model
        .endpoints
        .iter()
        .map(|e| endpoint_settings(e, defaults))
        .collect();
    RemoteSettings {
        info: model_info(name, model),
        protocol,
        upstream_model: model
            .upstream_model
            .clone()
            .unwrap_or_else(|| name.to_string()),
        router: router_settings(name, endpoints, upstream),
        batch_size: model.batch_size,
        chunk_concurrency: model.chunk_concurrency,
        attempt_timeout: Duration::from_millis(upstream.attempt_timeout_ms),
        probe_interval: (upstream.probe_interval_ms > 0)
            .then(|| Duration::from_millis(upstream.probe_interval_ms)),
    }
}

/// One upstream server as the routing core takes it; timeouts it leaves out are `defaults`.
pub(crate) fn endpoint_settings(e: &EndpointConfig, defaults: Timeouts) -> EndpointSettings {
    let ms = |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
    EndpointSettings {
        name: e.name.clone().unwrap_or_default(),
        url: e.url.clone(),
        weight: e.weight,
        api_key: e.api_key.clone(),
        timeouts: Timeouts {
            connect: ms(e.connect_timeout_ms, defaults.connect),
            first_byte: ms(e.first_byte_timeout_ms, defaults.first_byte),
            idle: ms(e.idle_timeout_ms, defaults.idle),
        },
    }
}

/// The same retry and breaker policy for every router, embedding or LLM.
pub(crate) fn router_settings(
    name: &str,
    endpoints: Vec<EndpointSettings>,
    upstream: &UpstreamConfig,
) -> RouterSettings {
    RouterSettings {
        name: name.to_string(),
        endpoints,
        retry: RetryPolicy {
            max_attempts: upstream.retry.max_attempts,
            initial_backoff: Duration::from_millis(upstream.retry.initial_backoff_ms),
            max_backoff: Duration::from_millis(upstream.retry.max_backoff_ms),
        },
        breaker: BreakerPolicy {
            failure_threshold: upstream.breaker.failure_threshold,
            open_for: Duration::from_millis(upstream.breaker.open_ms),
        },
    }
}

fn model_info(name: &str, model: &ModelConfig) -> ModelInfo {
    ModelInfo {
        name: name.to_string(),
        aliases: model.aliases.clone(),
        dimensions: model.dimensions,
        max_input_tokens: model.max_input_tokens,
        backend: model.backend.as_str(),
        owned_by: match model.backend {
            BackendKind::Onnx => "citadel".to_string(),
            other => other.as_str().to_string(),
        },
        identity: identity(name, model),
    }
}

/// What the cache keys a model's vectors by. In process: the graph and tokenizer files' sizes
/// and modification times (a rebuilt graph orphans old vectors; hashing 90 MB at every start
/// would cost more than it guards). Remote: the upstream model's name. Both add the operator's
/// `revision`, to bump after re-pulling a model upstream.
fn identity(name: &str, model: &ModelConfig) -> String {
    let revision = model.revision.as_deref().unwrap_or("");
    let source = match model.backend {
        BackendKind::Onnx => {
            let dir = model.dir.clone().unwrap_or_default();
            let stamp = |file: &str| {
                let meta = std::fs::metadata(dir.join(file)).ok();
                let modified = meta.as_ref().and_then(|m| m.modified().ok());
                let nanos = modified
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{file}:{}:{nanos}", meta.map_or(0, |m| m.len()))
            };
            format!("{}|{}", stamp(&model.graph), stamp("tokenizer.json"))
        }
        BackendKind::Ollama | BackendKind::Openai => model
            .upstream_model
            .clone()
            .unwrap_or_else(|| name.to_string()),
    };
    // The truncation length changes the vectors of long inputs.
    let tokens = model.max_input_tokens;
    format!(
        "{name}|{}|{source}|tokens:{tokens}|{revision}",
        model.backend.as_str()
    )
}

fn model_options(model: &ModelConfig) -> ModelOptions {
    ModelOptions {
        max_queued_inputs: model.max_queued_inputs,
        prompts: model
            .prompts
            .iter()
            .map(|(name, prefix)| (name.clone(), prefix.clone()))
            .collect(),
        default_prompt: model.default_prompt.clone(),
        fallback: model.fallback.clone(),
    }
}

fn onnx_settings(name: &str, model: &ModelConfig) -> OnnxModelSettings {
    OnnxModelSettings {
        info: model_info(name, model),
        dir: model.dir.clone().unwrap_or_default(),
        graph: model.graph.clone(),
        sessions: model.sessions,
        intra_threads: model.intra_threads,
        max_batch_tokens: model.max_batch_tokens,
        max_window_tokens: model.max_window_tokens,
    }
}
