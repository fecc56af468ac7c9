//! SIGHUP: read the configuration again from the same sources as at start (files, `--env`,
//! `CITADEL_*` variables) and apply what is safe to change in a running process. Today that is
//! `log.level`. Every other key that changed is named in a warning saying it takes a restart:
//! limits and upstream endpoints are built into the running cores, and swapping them under
//! requests in flight is not done half-way. A configuration that no longer loads is refused
//! with the key named, and the process keeps the one it has.

use citadel_config::{Config, ConfigError};
use citadel_telemetry::LevelChange;
use serde_json::Value;

/// Loads the configuration the way the process was started.
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Registers for SIGHUP now (call inside the runtime), so a SIGHUP from here on reloads
/// instead of ending the process; the returned future handles them until the process ends.
pub fn on_hangup(mut current: Config, load: Loader) -> impl Future<Output = ()> + Send {
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
                Ok(next) => current = apply(current, next),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: the configuration did not load; still running on the previous one"
                ),
            }
        }
    }
}

/// Applies `next` where it can; returns the configuration now in force.
fn apply(mut current: Config, next: Config) -> Config {
    let (before, after) = match (serde_json::to_value(&current), serde_json::to_value(&next)) {
        (Ok(before), Ok(after)) => (before, after),
        _ => {
            tracing::error!("SIGHUP: cannot compare configurations; nothing changed");
            return current;
        }
    };
    let mut changed = Vec::new();
    differences("", &before, &after, &mut changed);
    changed.retain(|key| key != "log.level");
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
    match (changed.is_empty(), failed) {
        (true, false) => tracing::warn!("SIGHUP: configuration reloaded"),
        (true, true) => {}
        (false, _) => tracing::warn!(
            keys = %changed.join(", "),
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
}
