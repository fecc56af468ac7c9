//! Configuration -> the LLM core: `[[llm.servers]]` as one router under the shared retry and
//! breaker policy, each server's timeouts defaulting to `[upstream]` and `[llm]`.

use std::{sync::Arc, time::Duration};

use citadel_config::Config;
use citadel_llm::{LlmCore, LlmSettings};
use citadel_routing::{ClientPool, Timeouts};

use crate::models::{endpoint_settings, router_settings};

pub(crate) async fn start(config: &Config) -> anyhow::Result<Arc<LlmCore>> {
    let (llm, upstream) = (&config.llm, &config.upstream);
    let ms = Duration::from_millis;
    // A unary completion's head comes after the whole generation: the first-byte default is
    // the completion's own limit, not an embedding call's.
    let defaults = Timeouts {
        connect: ms(upstream.connect_timeout_ms),
        first_byte: ms(llm.request_timeout_ms),
        idle: ms(llm.stream_idle_timeout_ms),
    };
    let servers = (!llm.servers.is_empty()).then(|| {
        let endpoints = llm
            .servers
            .iter()
            .map(|s| endpoint_settings(s, defaults))
            .collect();
        router_settings("llm", endpoints, upstream)
    });
    let settings = LlmSettings {
        ttft_timeout: ms(llm.ttft_timeout_ms),
        request_timeout: ms(llm.request_timeout_ms),
        discovery_interval: ms(llm.discovery_interval_ms),
        load_interval: (llm.load_interval_ms > 0).then(|| ms(llm.load_interval_ms)),
        aliases: llm.aliases.clone(),
        fallbacks: llm.fallbacks.clone(),
    };
    let clients = ClientPool::new(upstream.pool_max_idle_per_host);
    LlmCore::start(servers, settings, &clients)
        .await
        .map_err(|e| anyhow::anyhow!("llm.servers: {e}"))
}
