//! `Router`: a set of endpoints under one retry and breaker policy, and the one attempt loop
//! every routed call goes through.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tracing::Instrument;

use tokio::{sync::watch, task::JoinHandle, time::Instant};

use crate::{
    AttemptError, BreakerState, ClientPool, EndpointView, ModelState, Probe, RetryPolicy,
    RouteError, RouterSettings, balance, breaker::Admission, endpoint::Endpoint,
    metrics::UpstreamMetrics, probe, retry,
};

/// What the call loop hands the caller's closure for one attempt.
pub struct Attempt {
    /// The endpoint's position in the router (stable for its life).
    pub index: usize,
    pub endpoint: Arc<Endpoint>,
    /// How long this attempt may take before its verdict: the route's limit on one attempt,
    /// cut by the caller's deadline.
    pub limit: Duration,
}

pub struct Router {
    name: String,
    endpoints: Vec<Arc<Endpoint>>,
    retry: RetryPolicy,
    /// Every endpoint's breaker open: `Unavailable`, else `Ready`.
    state: watch::Sender<ModelState>,
    probes: Mutex<Vec<JoinHandle<()>>>,
    metrics: UpstreamMetrics,
}

impl Router {
    pub fn new(settings: RouterSettings, clients: &ClientPool) -> Result<Self, String> {
        let endpoints = settings
            .endpoints
            .iter()
            .map(|e| Endpoint::new(e, clients, settings.breaker).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(format!("`{}` has no endpoints", settings.name));
        }
        let metrics = UpstreamMetrics::new();
        for endpoint in &endpoints {
            metrics.register(&settings.name, &endpoint.url);
        }
        Ok(Router {
            name: settings.name,
            endpoints,
            retry: settings.retry,
            state: watch::Sender::new(ModelState::Ready),
            probes: Mutex::default(),
            metrics,
        })
    }

    /// Starts one probe per endpoint, each given `limit` per call; needs a Tokio runtime.
    pub fn start_probes(self: &Arc<Self>, interval: Duration, limit: Duration, probe: Probe) {
        let handles = (0..self.endpoints.len())
            .map(|i| {
                let router = Arc::downgrade(self);
                tokio::spawn(probe::run(router, i, interval, limit, probe.clone()))
            })
            .collect();
        let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        probes.iter().for_each(JoinHandle::abort);
        *probes = handles;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub fn endpoint(&self, i: usize) -> &Arc<Endpoint> {
        &self.endpoints[i]
    }

    pub fn state(&self) -> ModelState {
        self.state.borrow().clone()
    }

    /// Follows breaker changes: the router's own state, recomputed on every transition.
    pub fn watch_state(&self) -> watch::Receiver<ModelState> {
        self.state.subscribe()
    }

    pub fn views(&self) -> Vec<EndpointView> {
        let now = Instant::now();
        self.endpoints.iter().map(|e| e.view(now)).collect()
    }

    /// Whether endpoint `i`'s breaker is open now.
    pub fn is_open(&self, i: usize) -> bool {
        self.endpoints[i].breaker.is_open()
    }

    /// Calls `call` once per attempt until one succeeds, the attempts run out, or the deadline
    /// leaves no room for another: pick (p2c among `candidates` whose breaker admits, untried
    /// first) → call (bounded by `attempt_limit` and the deadline) → verdict (metrics, breaker,
    /// latency) → backoff (full jitter, at least `Retry-After`, never past the deadline).
    /// `route` labels the metrics (a model); `candidates` of `None` means every endpoint.
    pub async fn call<T, F, Fut>(
        &self,
        route: &str,
        candidates: Option<&[usize]>,
        deadline: Option<Instant>,
        attempt_limit: Duration,
        mut call: F,
    ) -> Result<T, RouteError>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let started = Instant::now();
        let all: Vec<usize>;
        let candidates = match candidates {
            Some(c) => c,
            None => {
                all = (0..self.endpoints.len()).collect();
                &all
            }
        };
        let mut tried: Vec<usize> = Vec::new();
        let mut last: Option<(usize, AttemptError)> = None;
        for attempt in 0..self.retry.max_attempts {
            if let Some((_, error)) = &last {
                // Wait out a Retry-After only when no untried endpoint could take the call now.
                let now = Instant::now();
                let elsewhere = candidates
                    .iter()
                    .any(|j| !tried.contains(j) && self.endpoints[*j].breaker.admits(now));
                let after = if elsewhere { None } else { error.retry_after() };
                // A server asking for more patience than the caller has (or, without a
                // deadline, than one attempt may take) gets its answer passed on, rather than
                // the caller's resources held for it.
                let ceiling = deadline.map_or(attempt_limit, |d| d - now.min(d));
                if after.is_some_and(|a| a > ceiling) {
                    break;
                }
                let pause = retry::backoff(&self.retry, attempt, after);
                if !retry::fits(pause, deadline) {
                    break;
                }
                self.metrics.retry(route);
                tokio::time::sleep(pause).await;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                break;
            }
            let Some((i, admission)) =
                balance::pick(&self.endpoints, candidates, &tried, Instant::now())
            else {
                break;
            };
            tried.push(i);
            if let Admission::Trial(_) = admission {
                let url = &self.endpoints[i].url;
                self.metrics
                    .breaker(&self.name, url, BreakerState::HalfOpen);
            }
            let _trial = TrialGuard::new(&self.endpoints[i], admission);
            // Cut short by the caller's deadline, a time-out says nothing about the endpoint.
            let limit = left.map_or(attempt_limit, |l| l.min(attempt_limit));
            let judged = limit == attempt_limit;
            match self.attempt(route, i, limit, judged, &mut call).await {
                Ok(answer) => return Ok(answer),
                Err(error) if !error.is_retryable() => {
                    return Err(self.give_up(i, error, candidates));
                }
                Err(error) => last = Some((i, error)),
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let elapsed = started.elapsed();
            return Err(RouteError::DeadlineExceeded { elapsed });
        }
        Err(match last {
            Some((i, error)) => self.give_up(i, error, candidates),
            None => self.all_open(candidates),
        })
    }

    /// One attempt on endpoint `i`, bounded by `limit`, and its verdict: metrics, the
    /// breaker, the endpoint's latency and last error. `judged`: the attempt had its full
    /// time, so a time-out counts against the endpoint.
    pub(crate) async fn attempt<T, F, Fut>(
        &self,
        route: &str,
        i: usize,
        limit: Duration,
        judged: bool,
        call: F,
    ) -> Result<T, AttemptError>
    where
        F: FnOnce(Attempt) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let endpoint = &self.endpoints[i];
        let started = Instant::now();
        let attempt = Attempt {
            index: i,
            endpoint: endpoint.clone(),
            limit,
        };
        // Traces only (the target the logs leave out); a no-op span with traces off.
        let span = tracing::info_span!(target: "citadel::trace", "upstream.attempt",
            route, endpoint = %endpoint.name());
        let result = match tokio::time::timeout(limit, call(attempt))
            .instrument(span)
            .await
        {
            Ok(result) => result,
            Err(_) => Err(AttemptError::Timeout(limit)),
        };
        let took = started.elapsed();
        let outcome = result.as_ref().map_or_else(AttemptError::outcome, |_| "ok");
        self.metrics.attempt(route, &endpoint.url, outcome, took);
        match &result {
            Ok(_) => {
                endpoint.observe(took);
                endpoint.note(None);
                self.settle(i, endpoint.breaker.on_success());
            }
            Err(e) => {
                endpoint.note(Some(e.to_string()));
                // A time-out shorter than the attempt's limit is the endpoint's own (first
                // byte, idle): judged whatever the caller's deadline.
                let cut_short = matches!(e, AttemptError::Timeout(d) if *d >= limit);
                if e.counts_against_endpoint() && (judged || !cut_short) {
                    self.settle(i, endpoint.breaker.on_failure(Instant::now()));
                }
            }
        }
        result
    }

    /// A breaker changed state: log it, publish it, and recompute the router's own state.
    fn settle(&self, i: usize, changed: Option<BreakerState>) {
        let Some(state) = changed else { return };
        let endpoint = &self.endpoints[i];
        let (name, url) = (&self.name, &endpoint.url);
        match state {
            BreakerState::Open => {
                let last_error = endpoint.last_error().unwrap_or_default();
                tracing::warn!(route = %name, endpoint = %url, %last_error, "circuit breaker opened");
            }
            _ => tracing::info!(route = %name, endpoint = %url, ?state, "circuit breaker closed"),
        }
        self.metrics.breaker(name, url, state);
        // Decided under the watch's lock, so two breakers changing at once cannot leave the
        // router marked by the older view. Every transition notifies, so a watcher computing
        // a narrower state (one model's servers) sees each change.
        self.state.send_modify(|current| {
            let all_open = self.endpoints.iter().all(|e| e.breaker.is_open());
            *current = match all_open {
                true => ModelState::Unavailable(format!(
                    "all {} endpoint(s) are failing; last error from {url}: {}",
                    self.endpoints.len(),
                    endpoint.last_error().unwrap_or_default()
                )),
                false => ModelState::Ready,
            };
        });
    }

    /// The caller's error once no more attempts will be made.
    fn give_up(&self, i: usize, error: AttemptError, candidates: &[usize]) -> RouteError {
        let endpoint = self.endpoints[i].url.clone();
        if error.is_input_error() {
            return RouteError::Refused { endpoint, error };
        }
        if error.is_transient() {
            let reason = format!("no upstream server answered; last: {endpoint} {error}");
            let retry_after = error.retry_after().or_else(|| self.reopens_in(candidates));
            return RouteError::Unavailable {
                reason,
                retry_after,
                last: Some(error),
            };
        }
        RouteError::Upstream { endpoint, error }
    }

    fn all_open(&self, candidates: &[usize]) -> RouteError {
        let reason = format!(
            "all {} upstream endpoint(s) are failing (circuit breakers open)",
            candidates.len()
        );
        RouteError::Unavailable {
            reason,
            retry_after: self.reopens_in(candidates),
            last: None,
        }
    }

    /// The soonest an open breaker among `candidates` lets a trial through.
    fn reopens_in(&self, candidates: &[usize]) -> Option<Duration> {
        let now = Instant::now();
        candidates
            .iter()
            .filter_map(|&i| self.endpoints[i].breaker.reopens_in(now))
            .min()
    }

    /// Stops the probes. Called on shutdown and on drop.
    pub fn close(&self) {
        let probes = std::mem::take(&mut *self.probes.lock().unwrap_or_else(|e| e.into_inner()));
        probes.iter().for_each(JoinHandle::abort);
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.close();
    }
}

/// A half-open trial whose caller went away (deadline, cancellation, a 429) lets the next
/// one through; a verdict already given, or a newer trial, is left alone.
struct TrialGuard<'a> {
    trial: Option<(&'a Endpoint, u64)>,
}

impl<'a> TrialGuard<'a> {
    fn new(endpoint: &'a Endpoint, admission: Admission) -> Self {
        let trial = match admission {
            Admission::Trial(generation) => Some((endpoint, generation)),
            Admission::Normal => None,
        };
        TrialGuard { trial }
    }
}

impl Drop for TrialGuard<'_> {
    fn drop(&mut self) {
        if let Some((endpoint, generation)) = self.trial {
            endpoint.breaker.release_trial(generation);
        }
    }
}
