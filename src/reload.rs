//! SIGHUP: read the configuration again from the same sources as at start (files, `--env`,
//! `CITADEL_*` variables) and apply what is safe to change in a running process: `log.level`,
//! the rate limits and permissions of roles (`auth.roles`, `auth.default_role`), and the
//! servers of remote embedding models (`models.NAME.endpoints`: requests in flight finish on
//! the old set). Every other key that changed is named in a warning saying it takes a restart
//! (`llm.servers` among them: the LLM catalog is built from the servers' model lists at
//! start). A configuration that no longer loads is refused with the key named, and the
//! process keeps the one it has.

use std::sync::{Arc, OnceLock};

use citadel_auth::Policy;
use citadel_config::{Config, ConfigError};
use citadel_telemetry::LevelChange;
use serde_json::Value;

use crate::models::RemoteModels;

/// Loads the configuration the way the process was started.
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What a reload can reach in the running process, handed over by the command as it builds
/// it (a SIGHUP before that applies only what needs nothing here).
#[derive(Default)]
pub struct Live {
    policy: OnceLock<Arc<Policy>>,
    remote_models: OnceLock<RemoteModels>,
}

impl Live {
    pub fn set_policy(&self, policy: Arc<Policy>) {
        let _ = self.policy.set(policy);
    }

    pub fn set_remote_models(&self, models: RemoteModels) {
        let _ = self.remote_models.set(models);
    }
}

/// Registers for SIGHUP now (call inside the runtime), so a SIGHUP from here on reloads
/// instead of ending the process; the returned future handles them until the process ends.
pub fn on_hangup(
    mut current: Config,
    load: Loader,
    live: Arc<Live>,
) -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let hangups = signal(SignalKind::hangup());
    async move {
        let mut hangups = match hangups {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP: configuration reload is off");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match load() {
                Ok(next) => current = apply(current, next, &live),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: the configuration did not load; still running on the previous one"
                ),
            }
        }
    }
}

/// The model whose servers `key` names (`models.NAME.endpoints`); names may hold dots.
fn endpoints_of(key: &str) -> Option<&str> {
    key.strip_prefix("models.")?.strip_suffix(".endpoints")
}

/// Replaces the servers of each remote model whose `endpoints` changed, under the retry and
/// breaker policy in force (`upstream.*` changes wait for a restart). Returns the keys
/// applied, and whether one failed.
fn apply_endpoints(
    changed: &[String],
    current: &mut Config,
    next: &Config,
    live: &Live,
) -> (Vec<String>, bool) {
    let (mut applied, mut failed) = (Vec::new(), false);
    let Some(models) = live.remote_models.get() else {
        return (applied, failed);
    };
    for key in changed {
        let Some(name) = endpoints_of(key) else {
            continue;
        };
        let (Some(model), Some(was), Some(wanted)) = (
            models.get(name),
            current.models.get(name),
            next.models.get(name),
        ) else {
            continue;
        };
        // A model switched on, off or to another backend is another model: restart.
        if !wanted.enabled || wanted.backend != was.backend {
            continue;
        }
        let router = crate::models::remote_router(name, wanted, &current.upstream);
        match model.replace_endpoints(router) {
            Ok(()) => {
                tracing::warn!(
                    key = %key,
                    endpoints = wanted.endpoints.len(),
                    "SIGHUP: endpoints applied: new requests go to the new servers"
                );
                let endpoints = wanted.endpoints.clone();
                if let Some(model) = current.models.get_mut(name) {
                    model.endpoints = endpoints;
                }
                applied.push(key.clone());
            }
            Err(e) => {
                failed = true;
                tracing::error!(key = %key, error = %e, "SIGHUP: endpoints not applied; the model keeps its servers");
            }
        }
    }
    (applied, failed)
}

/// Keys a reload applies to the roles: their permissions and limits, and the default role.
fn is_roles_key(key: &str) -> bool {
    key == "auth.roles" || key.starts_with("auth.roles.") || key == "auth.default_role"
}

/// Applies `next` where it can; returns the configuration now in force. Keys left for a
/// restart stay at their old values in it, so the next SIGHUP names them again.
fn apply(mut current: Config, next: Config, live: &Live) -> Config {
    let (before, after) = match (serde_json::to_value(&current), serde_json::to_value(&next)) {
        (Ok(before), Ok(after)) => (before, after),
        _ => {
            tracing::error!("SIGHUP: cannot compare configurations; nothing changed");
            return current;
        }
    };
    let mut changed = Vec::new();
    differences("", &before, &after, &mut changed);
    // Reported at WARN: a reload is an operator's act, and the line must show at any level
    // (lowering the level to warn would hide an INFO confirmation of itself).
    let mut failed = false;
    if next.log.level != current.log.level {
        match citadel_telemetry::set_log_level(&next.log.level) {
            Ok(LevelChange::Applied) => {
                tracing::warn!(from = %current.log.level, to = %next.log.level, "SIGHUP: log.level applied");
                current.log.level = next.log.level.clone();
            }
            Ok(LevelChange::PinnedByRustLog(pinned)) => tracing::warn!(
                rust_log = %pinned,
                "SIGHUP: log.level not applied: RUST_LOG is set and wins; unset it and restart"
            ),
            Err(e) => {
                failed = true;
                tracing::error!(error = %e, "SIGHUP: log.level not applied");
            }
        }
    }
    let roles: Vec<&String> = changed.iter().filter(|k| is_roles_key(k)).collect();
    let mut roles_applied = false;
    if let (false, Some(policy)) = (roles.is_empty(), live.policy.get()) {
        match policy.reload_roles(&next.auth) {
            Ok(()) => {
                tracing::warn!(
                    keys = %roles.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
                    "SIGHUP: roles applied: their permissions and limits hold from the next request"
                );
                current.auth.roles = next.auth.roles.clone();
                current.auth.default_role = next.auth.default_role.clone();
                roles_applied = true;
            }
            Err(e) => {
                failed = true;
                tracing::error!(error = %e, "SIGHUP: roles not applied; the previous ones stay");
            }
        }
    }
    let (endpoints, endpoints_failed) = apply_endpoints(&changed, &mut current, &next, live);
    failed |= endpoints_failed;
    let applied = |key: &str| {
        // Whatever its outcome, log.level was answered above: a restart would not change it.
        key == "log.level"
            || (is_roles_key(key) && roles_applied)
            || endpoints.iter().any(|k| k == key)
    };
    let restart: Vec<&String> = changed.iter().filter(|k| !applied(k)).collect();
    match (restart.is_empty(), failed) {
        (true, false) => tracing::warn!("SIGHUP: configuration reloaded"),
        (true, true) => {}
        (false, _) => tracing::warn!(
            keys = %restart.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
            "SIGHUP: these keys changed and take effect only after a restart (SIGTERM, then start)"
        ),
    }
    current
}

/// The dotted paths at which `a` and `b` differ: objects are compared key by key, anything
/// else (values, lists) as a whole. Values are never quoted: some are secrets.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let at = match path {
                    "" => key.clone(),
                    _ => format!("{path}.{key}"),
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differences(&at, x, y, out),
                    _ => out.push(at),
                }
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_every_changed_leaf_and_nothing_else() {
        let a = serde_json::json!({"log": {"level": "info", "format": "json"},
            "cache": {"ttl_secs": 1}, "models": {"m": {"endpoints": [1]}}});
        let b = serde_json::json!({"log": {"level": "debug", "format": "json"},
            "cache": {"ttl_secs": 1}, "models": {"m": {"endpoints": [1, 2]}, "n": {}}});
        let mut out = Vec::new();
        differences("", &a, &b, &mut out);
        assert_eq!(out, ["log.level", "models.m.endpoints", "models.n"]);
    }

    #[test]
    fn endpoints_keys_name_their_model_even_with_dots_in_it() {
        assert_eq!(
            endpoints_of("models.nomic-embed-text:v1.5.endpoints"),
            Some("nomic-embed-text:v1.5")
        );
        assert_eq!(endpoints_of("models.m.batch_size"), None);
        assert_eq!(endpoints_of("llm.servers"), None);
    }
}
