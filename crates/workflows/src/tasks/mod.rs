//! The built-in task kinds: `noop` and `sleep` for tests and benchmarks, `embed_batch` and
//! `cache_warm` over `EmbeddingService`, `llm_batch` and `llm_chain` over `CompletionService`.

mod embed;
mod files;
mod llm;
mod noop;
mod sleep;

pub use embed::{CacheWarm, EmbedBatch, EmbedSettings};
pub use files::FileRoot;
pub use llm::{LlmBatch, LlmChain, LlmSettings};
pub use noop::Noop;
pub use sleep::Sleep;

use serde_json::Value as Json;

/// `params` must be a JSON object; names the kind otherwise.
pub(crate) fn object<'a>(
    kind: &str,
    params: &'a Json,
) -> Result<&'a serde_json::Map<String, Json>, String> {
    params
        .as_object()
        .ok_or_else(|| format!("params of a {kind} workflow must be a JSON object"))
}
