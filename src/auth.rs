//! Wiring of `citadel-auth` into the binary: the policy from `[auth]`, its key store on
//! `database.url` and its shared limits on `cache.redis_url`; a loud warning when a server
//! with auth off listens beyond loopback.

use std::{sync::Arc, time::Duration};

use citadel_auth::{Policy, SharedLimits};
use citadel_config::{AuthMode, Config};

pub async fn policy(config: &Config) -> anyhow::Result<Arc<Policy>> {
    let shared = (!config.cache.redis_url.is_empty()).then(|| SharedLimits {
        redis_url: config.cache.redis_url.clone(),
        key_prefix: config.cache.key_prefix.clone(),
        timeout: Duration::from_millis(config.cache.redis_timeout_ms.max(1)),
    });
    let policy = Policy::start(&config.auth, &config.database.url, shared)
        .await
        .map_err(anyhow::Error::msg)?;
    if config.auth.mode == AuthMode::Off {
        let open: Vec<String> = [
            ("http.addr", config.http.addr),
            ("grpc.addr", config.grpc.addr),
        ]
        .into_iter()
        .filter(|(_, addr)| !addr.ip().is_loopback())
        .map(|(key, addr)| format!("{key} = {addr}"))
        .collect();
        if !open.is_empty() {
            tracing::warn!(
                listening = %open.join(", "),
                "auth.mode = \"off\": anyone who can reach these addresses may embed, complete, \
                 and read or cancel every workflow; set auth.mode = \"required\" (see README) \
                 or listen on 127.0.0.1"
            );
        }
    } else if config.workflows.api_key.is_none() {
        tracing::warn!(
            "auth.mode = \"required\" and workflows.api_key is not set: workflow kinds that \
             call EmbeddingService or CompletionService will be refused; create a key with \
             `citadel keys create --name workflows --role member` and set \
             CITADEL_WORKFLOWS__API_KEY"
        );
    }
    Ok(policy)
}
