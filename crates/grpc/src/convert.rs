//! Protobuf messages <-> embedding-core types.

use citadel_embeddings::{
    BreakerState, CacheLevelStatus, CachePolicy, CacheStatus, EmbedParams, Embedded, EndpointView,
    ModelState, ModelView,
};
use citadel_proto::v1;
use tokio::time::Instant;

pub(crate) fn embed_params(request: v1::EmbedRequest, deadline: Option<Instant>) -> EmbedParams {
    let cache_policy = match request.cache_policy() {
        v1::CachePolicy::Default => CachePolicy::Default,
        v1::CachePolicy::NoCache => CachePolicy::NoCache,
        v1::CachePolicy::NoStore => CachePolicy::NoStore,
    };
    EmbedParams {
        cache_policy,
        model: request.model,
        inputs: request.inputs,
        dimensions: request.dimensions,
        normalize: request.normalize.unwrap_or(true),
        truncate: request.truncate.unwrap_or(true),
        prompt_name: request.prompt_name,
        deadline,
    }
}

pub(crate) fn embed_response(done: Embedded) -> v1::EmbedResponse {
    let tokens = u32::try_from(done.prompt_tokens).unwrap_or(u32::MAX);
    v1::EmbedResponse {
        cached: u32::try_from(done.cached).unwrap_or(u32::MAX),
        model: done.model,
        embeddings: done
            .vectors
            .into_iter()
            .map(|values| v1::Embedding { values })
            .collect(),
        usage: Some(v1::Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        }),
        timing: Some(v1::Timing {
            queue_us: done.timing.queue.as_micros() as u64,
            tokenize_us: done.timing.tokenize.as_micros() as u64,
            inference_us: done.timing.inference.as_micros() as u64,
            total_us: done.total.as_micros() as u64,
        }),
    }
}

pub(crate) fn model(view: ModelView) -> v1::Model {
    let (state, reason) = match view.state {
        ModelState::Loading => (v1::ModelState::Loading, String::new()),
        ModelState::Ready => (v1::ModelState::Ready, String::new()),
        ModelState::Failed(reason) => (v1::ModelState::Failed, reason),
        ModelState::Unavailable(reason) => (v1::ModelState::Unavailable, reason),
    };
    v1::Model {
        id: view.info.name,
        aliases: view.info.aliases,
        dimensions: view.info.dimensions,
        max_input_tokens: view.info.max_input_tokens,
        backend: view.info.backend.to_string(),
        state: state.into(),
        created: view.created,
        owned_by: view.info.owned_by,
        state_reason: reason,
        endpoints: view.endpoints.into_iter().map(endpoint).collect(),
        prompt_names: view.prompt_names,
        default_prompt: view.default_prompt.unwrap_or_default(),
        fallback: view.fallback.unwrap_or_default(),
    }
}

fn endpoint(view: EndpointView) -> v1::Endpoint {
    let breaker = match view.breaker {
        BreakerState::Closed => v1::BreakerState::Closed,
        BreakerState::Open => v1::BreakerState::Open,
        BreakerState::HalfOpen => v1::BreakerState::HalfOpen,
    };
    v1::Endpoint {
        url: view.url,
        weight: view.weight,
        breaker: breaker.into(),
        outstanding: view.outstanding,
        consecutive_failures: view.consecutive_failures,
        last_error: view.last_error.unwrap_or_default(),
        latency_us: view.latency.as_micros() as u64,
    }
}

/// No cache configured reads as mode "off" with both levels disabled.
pub(crate) fn cache_status(status: Option<CacheStatus>) -> v1::CacheStatus {
    let Some(status) = status else {
        let disabled = || {
            Some(level(CacheLevelStatus {
                state: "disabled",
                ..Default::default()
            }))
        };
        return v1::CacheStatus {
            mode: "off".into(),
            l1: disabled(),
            l2: disabled(),
            ..Default::default()
        };
    };
    v1::CacheStatus {
        mode: status.mode.into(),
        l1: Some(level(status.l1)),
        l2: Some(level(status.l2)),
        hit_rate: status.hit_rate,
        ttl_seconds: status.ttl_seconds,
    }
}

fn level(status: CacheLevelStatus) -> v1::CacheLevel {
    v1::CacheLevel {
        state: status.state.into(),
        last_error: status.last_error.unwrap_or_default(),
        hits: status.hits,
        misses: status.misses,
        errors: status.errors,
        entries: status.entries,
        bytes: status.bytes,
    }
}
