//! Which server serves which model: read from each server's `GET /v1/models` at start-up and
//! on every probe, with vLLM's `max_model_len` kept. Aliases and fallbacks come from
//! configuration; a model served by several servers is routed across all of them.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::RwLock,
};

use serde_json::Value;

/// One server's models: id -> context length (0 when the server does not say).
type Served = BTreeMap<String, u32>;

pub(crate) struct Catalog {
    /// By server index in the router.
    servers: RwLock<Vec<Served>>,
    aliases: BTreeMap<String, String>,
    fallbacks: BTreeMap<String, Vec<String>>,
}

/// A model as a request names it, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// The name the servers know it by.
    pub(crate) model: String,
    /// Servers that serve it, by router index.
    pub(crate) servers: Vec<usize>,
}

impl Catalog {
    pub(crate) fn new(
        servers: usize,
        aliases: BTreeMap<String, String>,
        fallbacks: BTreeMap<String, Vec<String>>,
    ) -> Self {
        Catalog {
            servers: RwLock::new(vec![Served::new(); servers]),
            aliases,
            fallbacks,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Served>> {
        self.servers.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what server `i` answered to `GET /v1/models`.
    pub(crate) fn update(&self, i: usize, body: &[u8]) -> Result<usize, String> {
        let served = parse_models(body)?;
        let count = served.len();
        let mut servers = self.servers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = servers.get_mut(i)
            && *slot != served
        {
            tracing::info!(server = i, models = ?served.keys().collect::<Vec<_>>(), "LLM server's models changed");
            *slot = served;
        }
        Ok(count)
    }

    /// `name` (a served model or an alias) and the servers serving it now.
    pub(crate) fn route(&self, name: &str) -> Option<Route> {
        let model = self.aliases.get(name).map_or(name, String::as_str);
        let servers: Vec<usize> = self
            .read()
            .iter()
            .enumerate()
            .filter(|(_, served)| served.contains_key(model))
            .map(|(i, _)| i)
            .collect();
        (!servers.is_empty()).then(|| Route {
            model: model.to_string(),
            servers,
        })
    }

    /// The models to try after `model`, in order.
    pub(crate) fn fallbacks(&self, model: &str) -> &[String] {
        self.fallbacks.get(model).map_or(&[], Vec::as_slice)
    }

    /// Every served model: id -> (servers, smallest known context length).
    pub(crate) fn models(&self) -> BTreeMap<String, (Vec<usize>, u32)> {
        let mut out: BTreeMap<String, (Vec<usize>, u32)> = BTreeMap::new();
        for (i, served) in self.read().iter().enumerate() {
            for (id, &len) in served {
                let entry = out.entry(id.clone()).or_default();
                entry.0.push(i);
                entry.1 = match (entry.1, len) {
                    (0, l) | (l, 0) => l,
                    (a, b) => a.min(b),
                };
            }
        }
        out
    }

    pub(crate) fn aliases(&self) -> &BTreeMap<String, String> {
        &self.aliases
    }

    /// Names a caller could have meant, for a 404's message.
    pub(crate) fn known(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self.models().into_keys().collect();
        names.extend(self.aliases.keys().cloned());
        names.into_iter().collect()
    }
}

/// `{"object": "list", "data": [{"id", "max_model_len"?}, ...]}`.
fn parse_models(body: &[u8]) -> Result<Served, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("answered malformed JSON ({e})"))?;
    let data = value
        .get("data")
        .and_then(Value::as_array)
        .ok_or("answered a model list without `data`")?;
    data.iter()
        .map(|m| {
            let id = m
                .get("id")
                .and_then(Value::as_str)
                .ok_or("answered a model without an `id`")?;
            let len = m.get("max_model_len").and_then(Value::as_u64).unwrap_or(0);
            Ok((id.to_string(), u32::try_from(len).unwrap_or(u32::MAX)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn models_are_routed_across_servers_and_aliases_resolve() {
        let aliases = BTreeMap::from([("gpt".to_string(), "llama".to_string())]);
        let catalog = Catalog::new(2, aliases, BTreeMap::new());
        catalog
            .update(0, br#"{"data": [{"id": "llama", "max_model_len": 8192}]}"#)
            .unwrap();
        catalog
            .update(
                1,
                br#"{"data": [{"id": "llama", "max_model_len": 4096}, {"id": "qwen"}]}"#,
            )
            .unwrap();
        assert_eq!(catalog.route("gpt").unwrap().servers, vec![0, 1]);
        assert_eq!(catalog.route("qwen").unwrap().servers, vec![1]);
        assert!(catalog.route("mistral").is_none());
        assert_eq!(catalog.models()["llama"], (vec![0, 1], 4096));
        assert!(catalog.update(0, b"{}").is_err());
    }
}
