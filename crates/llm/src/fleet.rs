//! The LLM servers as one router: their URLs, the models each serves (read from each server's
//! `GET /v1/models`), and the load each reports (vLLM's `/metrics`), which the balancer adds
//! to our own in-flight counts.

use std::{sync::Arc, time::Duration};

use citadel_proto::v1::{ListLlmModelsResponse, LlmModel, LlmServer};
use citadel_routing::{AttemptError, BreakerState, ClientPool, Endpoint, Router, RouterSettings};
use tokio::{task::JoinHandle, time::Instant};

use crate::{LlmSettings, catalog::Catalog, flavor::Flavor};

/// Model lists and metrics pages are refused past this size.
const MAX_LIST_BYTES: usize = 4 << 20;
/// One discovery call (`GET /v1/models`) may take this long.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// A request for a model no server is known to serve re-reads the servers' lists, at most
/// this often (a flood of unknown names must not become a flood of discovery calls).
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a request waits for that re-read.
const REFRESH_LIMIT: Duration = Duration::from_secs(2);

/// One server's URLs, built once from its base.
pub(crate) struct Urls {
    pub(crate) chat: reqwest::Url,
    pub(crate) completions: reqwest::Url,
    models: reqwest::Url,
    metrics: reqwest::Url,
}

pub struct Fleet {
    pub(crate) router: Arc<Router>,
    pub(crate) catalog: Arc<Catalog>,
    urls: Arc<Vec<Urls>>,
    /// Discovery and load scraping.
    tasks: Vec<JoinHandle<()>>,
    /// When the lists were last re-read on demand; held while one is under way.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

impl Fleet {
    pub(crate) async fn start(
        servers: RouterSettings,
        settings: &LlmSettings,
        clients: &ClientPool,
    ) -> Result<Fleet, String> {
        let router = Arc::new(Router::new(servers, clients)?);
        let urls = router
            .endpoints()
            .iter()
            .map(|e| urls(e.base()))
            .collect::<Result<Vec<_>, _>>()?;
        let urls = Arc::new(urls);
        let catalog = Arc::new(Catalog::new(
            urls.len(),
            settings.aliases.clone(),
            settings.fallbacks.clone(),
        ));
        // Start-up reads every server's models once, side by side, so a configured fleet
        // serves from the first request; one that is down is read again later.
        let first = (0..urls.len()).map(|i| discover(&router, &urls, &catalog, i));
        futures_util::future::join_all(first).await;

        // Discovery is not a probe: a model list that answers says nothing about whether
        // completions do, so it must not close a breaker that failed completions opened.
        // Breakers of LLM servers recover through their half-open trials.
        let every = settings.discovery_interval;
        let mut tasks = vec![tokio::spawn(rediscover(
            router.clone(),
            urls.clone(),
            catalog.clone(),
            every,
        ))];
        if let Some(every) = settings.load_interval {
            let scrapers = (0..urls.len())
                .map(|i| tokio::spawn(scrape(router.clone(), urls.clone(), i, every)));
            tasks.extend(scrapers);
        }
        Ok(Fleet {
            router,
            catalog,
            urls,
            tasks,
            refreshed: tokio::sync::Mutex::new(None),
        })
    }

    /// Re-reads every server's models now (a server that came up after us, a model loaded
    /// since the last probe), unless that was done within `REFRESH_INTERVAL`; concurrent
    /// callers wait for the one refresh under way.
    pub(crate) async fn refresh(&self) {
        let mut last = self.refreshed.lock().await;
        if last.is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
            return;
        }
        let all =
            (0..self.urls.len()).map(|i| discover(&self.router, &self.urls, &self.catalog, i));
        // Bounded: the caller is waiting for an answer, not for a slow server's list.
        let _ = tokio::time::timeout(REFRESH_LIMIT, futures_util::future::join_all(all)).await;
        *last = Some(Instant::now());
    }

    pub(crate) fn url<F: Flavor>(&self, i: usize) -> reqwest::Url {
        F::url(&self.urls[i]).clone()
    }

    /// The models served now, with their servers, and the aliases.
    pub fn models(&self) -> ListLlmModelsResponse {
        let views = self.router.views();
        let server = |i: usize| {
            let v = &views[i];
            LlmServer {
                name: v.name.clone(),
                url: v.url.clone(),
                breaker: breaker_name(v.breaker).to_string(),
                in_flight: v.outstanding,
                last_error: v.last_error.clone(),
                models: Vec::new(),
            }
        };
        let state = |servers: &[usize]| match servers.iter().any(|&i| !self.router.is_open(i)) {
            true => "ready",
            false => "unavailable",
        };
        let served = self.catalog.models();
        let mut models: Vec<LlmModel> = served
            .iter()
            .map(|(id, (servers, len))| LlmModel {
                id: id.clone(),
                servers: servers.iter().map(|&i| server(i)).collect(),
                max_model_len: *len,
                alias_of: None,
                state: state(servers).to_string(),
            })
            .collect();
        for (alias, target) in self.catalog.aliases() {
            if let Some((servers, len)) = served.get(target) {
                models.push(LlmModel {
                    id: alias.clone(),
                    servers: servers.iter().map(|&i| server(i)).collect(),
                    max_model_len: *len,
                    alias_of: Some(target.clone()),
                    state: state(servers).to_string(),
                });
            }
        }
        let servers = self
            .servers()
            .into_iter()
            .enumerate()
            .map(|(i, (_, models))| LlmServer {
                models,
                ..server(i)
            })
            .collect();
        ListLlmModelsResponse { models, servers }
    }

    /// Each server, and the models it serves, for `/health/detailed`.
    pub fn servers(&self) -> Vec<(citadel_routing::EndpointView, Vec<String>)> {
        let served = self.catalog.models();
        self.router
            .views()
            .into_iter()
            .enumerate()
            .map(|(i, view)| {
                let models = served
                    .iter()
                    .filter(|(_, (servers, _))| servers.contains(&i))
                    .map(|(id, _)| id.clone())
                    .collect();
                (view, models)
            })
            .collect()
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    pub(crate) fn close(&self) {
        self.router.close();
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

pub(crate) fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

/// OpenAI-compatible bases may or may not end in `/v1`; `/metrics` is at the server's root.
fn urls(base: &reqwest::Url) -> Result<Urls, String> {
    let root = base.as_str().trim_end_matches('/');
    let api = match base.path().trim_matches('/') {
        "" => format!("{root}/v1"),
        _ => root.to_string(),
    };
    let parse =
        |s: String| reqwest::Url::parse(&s).map_err(|e| format!("`{s}` is not a valid URL: {e}"));
    let mut metrics = base.clone();
    metrics.set_path("/metrics");
    Ok(Urls {
        chat: parse(format!("{api}/chat/completions"))?,
        completions: parse(format!("{api}/completions"))?,
        models: parse(format!("{api}/models"))?,
        metrics,
    })
}

async fn fetch(
    endpoint: &Arc<Endpoint>,
    url: reqwest::Url,
    limit: Duration,
) -> Result<Vec<u8>, AttemptError> {
    let request = endpoint.request(reqwest::Method::GET, url);
    endpoint
        .send(request, limit)
        .await?
        .bytes(MAX_LIST_BYTES)
        .await
}

/// Re-reads every server's models every `every`.
async fn rediscover(
    router: Arc<Router>,
    urls: Arc<Vec<Urls>>,
    catalog: Arc<Catalog>,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let all = (0..urls.len()).map(|i| discover(&router, &urls, &catalog, i));
        futures_util::future::join_all(all).await;
    }
}

async fn discover(router: &Router, urls: &[Urls], catalog: &Catalog, i: usize) {
    let endpoint = router.endpoint(i);
    match fetch(endpoint, urls[i].models.clone(), DISCOVERY_TIMEOUT).await {
        Ok(body) => match catalog.update(i, &body) {
            Ok(n) => tracing::info!(
                server = endpoint.name(),
                models = n,
                "LLM server discovered"
            ),
            Err(e) => {
                tracing::warn!(server = endpoint.name(), error = %e, "LLM server's model list is unusable")
            }
        },
        Err(e) => {
            tracing::warn!(server = endpoint.name(), error = %e, "LLM server did not list its models")
        }
    }
}

/// Reads vLLM's queue and KV-cache gauges every `every` into the server's reported load:
/// running + 4 x waiting (a newcomer queues behind those) + 16 x KV-cache use (near full,
/// vLLM preempts). A server without them (404, not vLLM) reports nothing.
async fn scrape(router: Arc<Router>, urls: Arc<Vec<Urls>>, i: usize, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let endpoint = router.endpoint(i);
        let load = match fetch(endpoint, urls[i].metrics.clone(), every).await {
            Ok(body) => parse_load(&String::from_utf8_lossy(&body)),
            Err(_) => 0,
        };
        endpoint.set_reported_load(load);
    }
}

pub(crate) fn parse_load(text: &str) -> u32 {
    let (mut running, mut waiting, mut kv) = (0.0f64, 0.0f64, 0.0f64);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let metric = name.split('{').next().unwrap_or_default().trim();
        match metric {
            "vllm:num_requests_running" => running += value,
            "vllm:num_requests_waiting" => waiting += value,
            "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" => kv = kv.max(value),
            _ => {}
        }
    }
    let score = running + 4.0 * waiting + 16.0 * kv.clamp(0.0, 1.0);
    if score.is_finite() {
        score.min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_gauges_become_one_load_figure() {
        let text = "# TYPE vllm:num_requests_running gauge\n\
                    vllm:num_requests_running{model_name=\"m\"} 3\n\
                    vllm:num_requests_waiting{model_name=\"m\"} 2\n\
                    vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n";
        assert_eq!(parse_load(text), 3 + 8 + 8);
        assert_eq!(parse_load("nonsense"), 0);
    }
}
