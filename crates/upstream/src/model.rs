//! `RemoteModel`: one model's router over its upstream servers, behind the core's `Backend`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use citadel_embeddings::{
    Backend, BackendOutput, BackendRequest, BreakerState, EmbedError, EndpointView, ModelInfo,
    ModelState, StageTiming,
};
use futures_util::{StreamExt, TryStreamExt, stream};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use crate::{
    ClientPool, Protocol, RemoteSettings, RetryPolicy, attempt::AttemptError, balance,
    breaker::Admission, endpoint::Endpoint, metrics::UpstreamMetrics, probe, retry, wire::Answer,
};

pub struct RemoteModel {
    info: ModelInfo,
    protocol: Protocol,
    upstream_model: String,
    batch_size: usize,
    chunk_concurrency: usize,
    pub(crate) attempt_timeout: Duration,
    retry: RetryPolicy,
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    state: watch::Sender<ModelState>,
    probes: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) metrics: UpstreamMetrics,
}

impl RemoteModel {
    /// Builds the router and starts its probes; needs a Tokio runtime.
    pub fn start(settings: RemoteSettings, clients: &ClientPool) -> Result<Arc<Self>, String> {
        let endpoints = settings
            .endpoints
            .iter()
            .map(|e| Endpoint::new(e, settings.protocol, clients, settings.breaker).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(format!("model `{}` has no endpoints", settings.info.name));
        }
        let metrics = UpstreamMetrics::new();
        for endpoint in &endpoints {
            metrics.register(&settings.info.name, &endpoint.url);
        }
        let model = Arc::new(RemoteModel {
            info: settings.info,
            protocol: settings.protocol,
            upstream_model: settings.upstream_model,
            batch_size: settings.batch_size.max(1),
            chunk_concurrency: settings.chunk_concurrency.max(1),
            attempt_timeout: settings.attempt_timeout,
            retry: settings.retry,
            endpoints,
            state: watch::Sender::new(ModelState::Ready),
            probes: Mutex::default(),
            metrics,
        });
        if let Some(interval) = settings.probe_interval {
            let handles = (0..model.endpoints.len())
                .map(|i| tokio::spawn(probe::run(Arc::downgrade(&model), i, interval)))
                .collect();
            *model.probes.lock().unwrap_or_else(|e| e.into_inner()) = handles;
        }
        Ok(model)
    }

    pub(crate) fn request_body(&self, inputs: &[String], truncate: bool) -> bytes::Bytes {
        let body = self
            .protocol
            .request_body(&self.upstream_model, inputs, truncate);
        bytes::Bytes::from(body)
    }

    /// One attempt on endpoint `i`: the call, its parsing, and what it means for the breaker.
    /// `judged`: the attempt had its full time, so a time-out counts against the endpoint.
    pub(crate) async fn attempt(
        &self,
        i: usize,
        body: bytes::Bytes,
        count: usize,
        timeout: Duration,
        judged: bool,
    ) -> Result<Answer, AttemptError> {
        let endpoint = &self.endpoints[i];
        let started = Instant::now();
        let limit = count * self.info.dimensions as usize * 32 + 64 * 1024;
        let result = match endpoint.post(body, timeout, limit).await {
            Ok(bytes) => self
                .protocol
                .parse_answer(&bytes, count, self.info.dimensions as usize)
                .map_err(AttemptError::Malformed),
            Err(e) => Err(e),
        };
        let outcome = result.as_ref().map_or_else(AttemptError::outcome, |_| "ok");
        self.metrics
            .attempt(&self.info.name, &endpoint.url, outcome, started.elapsed());
        match &result {
            Ok(_) => {
                endpoint.note(None);
                self.settle(i, endpoint.breaker.on_success());
            }
            Err(e) => {
                endpoint.note(Some(e.to_string()));
                let timed_out = matches!(e, AttemptError::Timeout(_));
                if e.counts_against_endpoint() && (judged || !timed_out) {
                    self.settle(i, endpoint.breaker.on_failure(Instant::now()));
                }
            }
        }
        result
    }

    /// A breaker changed state: log it, publish it, and recompute the model's own state.
    fn settle(&self, i: usize, changed: Option<BreakerState>) {
        let Some(state) = changed else { return };
        let endpoint = &self.endpoints[i];
        let (model, url) = (&self.info.name, &endpoint.url);
        match state {
            BreakerState::Open => {
                let last_error = endpoint.last_error().unwrap_or_default();
                tracing::warn!(%model, endpoint = %url, %last_error, "circuit breaker opened");
            }
            _ => tracing::info!(%model, endpoint = %url, ?state, "circuit breaker closed"),
        }
        self.metrics.breaker(model, url, state);
        // Decided under the watch's lock, so two breakers changing at once cannot leave the
        // model marked by the older view.
        self.state.send_if_modified(|current| {
            let all_open = self.endpoints.iter().all(|e| e.breaker.is_open());
            match (all_open, &*current) {
                (true, ModelState::Unavailable(_)) | (false, ModelState::Ready) => false,
                (true, _) => {
                    let reason = format!(
                        "all {} endpoint(s) are failing; last error from {url}: {}",
                        self.endpoints.len(),
                        endpoint.last_error().unwrap_or_default()
                    );
                    *current = ModelState::Unavailable(reason);
                    true
                }
                (false, _) => {
                    *current = ModelState::Ready;
                    true
                }
            }
        });
    }

    /// One chunk, with retries across endpoints until it succeeds, the attempts run out, or
    /// the deadline leaves no room for another.
    async fn embed_chunk(
        &self,
        inputs: &[String],
        truncate: bool,
        deadline: Option<Instant>,
    ) -> Result<Answer, EmbedError> {
        let started = Instant::now();
        let body = self.request_body(inputs, truncate);
        let mut tried: Vec<usize> = Vec::new();
        let mut last: Option<(usize, AttemptError)> = None;
        for attempt in 0..self.retry.max_attempts {
            if let Some((_, error)) = &last {
                // Wait out a Retry-After only when no untried endpoint could take the call now.
                let now = Instant::now();
                let elsewhere = (0..self.endpoints.len())
                    .any(|j| !tried.contains(&j) && self.endpoints[j].breaker.admits(now));
                let after = if elsewhere { None } else { error.retry_after() };
                // A server asking for more patience than the caller has (or, without a
                // deadline, than one attempt may take) gets its answer passed on: 503 with
                // Retry-After, rather than the caller's queue slots held for it.
                let ceiling = deadline.map_or(self.attempt_timeout, |d| d - now.min(d));
                if after.is_some_and(|a| a > ceiling) {
                    break;
                }
                let pause = retry::backoff(&self.retry, attempt, after);
                if !retry::fits(pause, deadline) {
                    break;
                }
                self.metrics.retry(&self.info.name);
                tokio::time::sleep(pause).await;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                break;
            }
            let Some((i, admission)) = balance::pick(&self.endpoints, &tried, Instant::now())
            else {
                break;
            };
            tried.push(i);
            if let Admission::Trial(_) = admission {
                let url = &self.endpoints[i].url;
                self.metrics
                    .breaker(&self.info.name, url, BreakerState::HalfOpen);
            }
            let _trial = TrialGuard::new(&self.endpoints[i], admission);
            // Cut short by the caller's deadline, a time-out says nothing about the endpoint.
            let timeout = left.map_or(self.attempt_timeout, |l| l.min(self.attempt_timeout));
            let judged = timeout == self.attempt_timeout;
            match self
                .attempt(i, body.clone(), inputs.len(), timeout, judged)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(error) if !error.is_retryable() => return Err(self.give_up(i, error)),
                Err(error) => last = Some((i, error)),
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let elapsed = started.elapsed();
            return Err(EmbedError::DeadlineExceeded { elapsed });
        }
        Err(match last {
            Some((i, error)) => self.give_up(i, error),
            None => self.all_open(),
        })
    }

    /// The caller's error once no more attempts will be made.
    fn give_up(&self, i: usize, error: AttemptError) -> EmbedError {
        let model = self.info.name.clone();
        let url = self.endpoints[i].url.clone();
        if error.is_input_error() {
            let message = format!("model `{model}`: upstream {url} refused the input: {error}");
            return EmbedError::InvalidInput {
                param: "input",
                message,
            };
        }
        if error.is_transient() {
            let reason = format!("no upstream server answered; last: {url} {error}");
            let retry_after = error.retry_after().or_else(|| self.reopens_in());
            return EmbedError::Unavailable {
                model,
                reason,
                retry_after,
            };
        }
        let message = match error {
            AttemptError::Status { code: 413, .. } => {
                format!("{error} (lower models.{model}.batch_size)")
            }
            _ => error.to_string(),
        };
        EmbedError::Upstream {
            model,
            endpoint: url,
            message,
        }
    }

    fn all_open(&self) -> EmbedError {
        let reason = format!(
            "all {} upstream endpoint(s) are failing (circuit breakers open)",
            self.endpoints.len()
        );
        EmbedError::Unavailable {
            model: self.info.name.clone(),
            reason,
            retry_after: self.reopens_in(),
        }
    }

    /// The soonest an open breaker lets a trial through.
    fn reopens_in(&self) -> Option<Duration> {
        let now = Instant::now();
        self.endpoints
            .iter()
            .filter_map(|e| e.breaker.reopens_in(now))
            .min()
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

#[async_trait]
impl Backend for RemoteModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn state(&self) -> ModelState {
        self.state.borrow().clone()
    }

    fn watch_state(&self) -> watch::Receiver<ModelState> {
        self.state.subscribe()
    }

    /// Splits the inputs into chunks of `batch_size`, sends up to `chunk_concurrency` at once,
    /// and reassembles the vectors in input order. One failed chunk fails the request (and
    /// drops the chunks still in flight).
    async fn embed(&self, request: BackendRequest) -> Result<BackendOutput, EmbedError> {
        let started = Instant::now();
        let (truncate, deadline) = (request.truncate, request.deadline);
        // Futures do nothing until polled: `buffered` starts at most `chunk_concurrency`.
        let chunks: Vec<_> = request
            .inputs
            .chunks(self.batch_size)
            .map(|chunk| self.embed_chunk(chunk, truncate, deadline))
            .collect();
        let answers: Vec<Answer> = stream::iter(chunks)
            .buffered(self.chunk_concurrency)
            .try_collect()
            .await?;
        let mut output = BackendOutput {
            vectors: Vec::with_capacity(request.inputs.len()),
            prompt_tokens: 0,
            // Servers count tokens per call, not per input: the core shares them out.
            input_tokens: Vec::new(),
            timing: StageTiming {
                inference: started.elapsed(),
                ..StageTiming::default()
            },
        };
        for answer in answers {
            output.vectors.extend(answer.vectors);
            output.prompt_tokens = output.prompt_tokens.saturating_add(answer.prompt_tokens);
        }
        Ok(output)
    }

    fn endpoints(&self) -> Vec<EndpointView> {
        let now = Instant::now();
        self.endpoints.iter().map(|e| e.view(now)).collect()
    }

    fn close(&self) {
        let probes = std::mem::take(&mut *self.probes.lock().unwrap_or_else(|e| e.into_inner()));
        probes.iter().for_each(JoinHandle::abort);
    }
}

impl Drop for RemoteModel {
    fn drop(&mut self) {
        self.close();
    }
}
