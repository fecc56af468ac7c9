//! Protobuf messages <-> embedding-core types.

use citadel_embeddings::{EmbedParams, Embedded, ModelState, ModelView};
use citadel_proto::v1;
use tokio::time::Instant;

pub(crate) fn embed_params(request: v1::EmbedRequest, deadline: Option<Instant>) -> EmbedParams {
    EmbedParams {
        model: request.model,
        inputs: request.inputs,
        dimensions: request.dimensions,
        normalize: request.normalize.unwrap_or(true),
        truncate: request.truncate.unwrap_or(true),
        deadline,
    }
}

pub(crate) fn embed_response(done: Embedded) -> v1::EmbedResponse {
    let tokens = u32::try_from(done.prompt_tokens).unwrap_or(u32::MAX);
    v1::EmbedResponse {
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
    let state = match view.state {
        ModelState::Loading => v1::ModelState::Loading,
        ModelState::Ready => v1::ModelState::Ready,
        ModelState::Failed(_) => v1::ModelState::Failed,
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
    }
}
