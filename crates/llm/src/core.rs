//! `LlmCore`: one door to the fleet's LLM servers. A request's model is resolved (alias,
//! then the servers discovered to serve it), routed by the routing core with retries across
//! those servers, and failed over to the model's configured fallbacks while nothing has reached
//! the caller. Streams are committed at their first chunk (`stream.rs`).

use std::{sync::Arc, time::Duration};
use tracing::Instrument;

use bytes::Bytes;
use citadel_proto::v1::{
    ChatChunk, ChatRequest, ChatResponse, CompleteChunk, CompleteRequest, CompleteResponse,
};
use citadel_routing::{Attempt, AttemptError, ClientPool, RouteError, RouterSettings};
use tokio::time::Instant;

use crate::{
    LlmError, LlmSettings,
    catalog::Route,
    flavor::{Chat, Flavor, Text},
    fleet::Fleet,
    metrics::LlmMetrics,
    stream::{self, CompletionStream},
};

/// A unary answer is refused past this size: completions are text, not payloads.
const MAX_ANSWER_BYTES: usize = 64 << 20;

pub struct LlmCore {
    fleet: Option<Fleet>,
    settings: LlmSettings,
    metrics: Arc<LlmMetrics>,
}

impl LlmCore {
    /// Builds the router over the servers (none: every model is unknown), reads each one's
    /// models (each call bounded by 5 s), and starts discovery and load scraping.
    pub async fn start(
        servers: Option<RouterSettings>,
        settings: LlmSettings,
        clients: &ClientPool,
    ) -> Result<Arc<Self>, String> {
        let fleet = match servers {
            Some(servers) => Some(Fleet::start(servers, &settings, clients).await?),
            None => None,
        };
        Ok(Arc::new(LlmCore {
            fleet,
            settings,
            metrics: Arc::new(LlmMetrics::new()),
        }))
    }

    pub fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    pub async fn chat(
        &self,
        request: ChatRequest,
        deadline: Option<Instant>,
    ) -> Result<ChatResponse, LlmError> {
        self.unary::<Chat>(request, deadline).await
    }

    pub async fn chat_stream(
        &self,
        request: ChatRequest,
        deadline: Option<Instant>,
    ) -> Result<CompletionStream<ChatChunk>, LlmError> {
        self.stream::<Chat>(request, deadline).await
    }

    pub async fn complete(
        &self,
        request: CompleteRequest,
        deadline: Option<Instant>,
    ) -> Result<CompleteResponse, LlmError> {
        self.unary::<Text>(request, deadline).await
    }

    pub async fn complete_stream(
        &self,
        request: CompleteRequest,
        deadline: Option<Instant>,
    ) -> Result<CompletionStream<CompleteChunk>, LlmError> {
        self.stream::<Text>(request, deadline).await
    }

    /// The whole answer in one response: routed with retries, then fallbacks.
    async fn unary<F: Flavor>(
        &self,
        request: F::Request,
        deadline: Option<Instant>,
    ) -> Result<F::Response, LlmError> {
        let started = Instant::now();
        let span =
            citadel_telemetry::trace_span!("llm", kind = F::KIND, model = %F::model(&request));
        let result = self
            .unary_inner::<F>(&request, started, deadline)
            .instrument(span)
            .await;
        let outcome = result.as_ref().map_or_else(LlmError::outcome, |_| "ok");
        let label = self.label(F::model(&request));
        self.metrics.request(&label, F::KIND, false, outcome);
        result
    }

    async fn unary_inner<F: Flavor>(
        &self,
        request: &F::Request,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Result<F::Response, LlmError> {
        F::validate(request)?;
        let (fleet, routes) = self.routes(F::model(request)).await?;
        let deadline = self.deadline(started, deadline);
        let mut last = None;
        for route in routes {
            let body = Bytes::from(F::body(request, &route.model, false));
            let limit = deadline.saturating_duration_since(Instant::now());
            let call = |attempt: Attempt| {
                let url = fleet.url::<F>(attempt.index);
                let body = body.clone();
                async move {
                    let endpoint = attempt.endpoint;
                    let request = endpoint
                        .request(reqwest::Method::POST, url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body);
                    let bytes = endpoint
                        .send(request, attempt.limit)
                        .await?
                        .bytes(MAX_ANSWER_BYTES)
                        .await?;
                    let response = F::response(&bytes).map_err(AttemptError::Malformed)?;
                    Ok((response, endpoint.name().to_string()))
                }
            };
            let servers = Some(route.servers.as_slice());
            match fleet
                .router
                .call(&route.model, servers, Some(deadline), limit, call)
                .await
            {
                Ok((mut response, server)) => {
                    if let Some(usage) = F::stamp_response(&mut response, &server) {
                        let (p, c) = (usage.prompt_tokens, usage.completion_tokens);
                        self.metrics.tokens(&route.model, &server, p, c);
                    }
                    return Ok(response);
                }
                Err(error) => {
                    let error = llm_error::<F>(&route.model, error, self.settings.ttft_timeout);
                    if !falls_back(&error) {
                        return Err(error);
                    }
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| LlmError::ModelNotFound(F::model(request).to_string())))
    }

    /// A stream committed at its first chunk; until then retried, then failed over.
    async fn stream<F: Flavor>(
        &self,
        request: F::Request,
        deadline: Option<Instant>,
    ) -> Result<CompletionStream<F::Chunk>, LlmError> {
        let started = Instant::now();
        // Until the first chunk commits the stream: routing, the upstream's head, fallbacks.
        let span = citadel_telemetry::trace_span!("llm.open_stream", kind = F::KIND,
            model = %F::model(&request));
        let result = self
            .open_stream::<F>(&request, started, deadline)
            .instrument(span)
            .await;
        if let Err(error) = &result {
            // A committed stream records its own outcome when it ends.
            let label = self.label(F::model(&request));
            self.metrics.request(&label, F::KIND, true, error.outcome());
        }
        result
    }

    async fn open_stream<F: Flavor>(
        &self,
        request: &F::Request,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Result<CompletionStream<F::Chunk>, LlmError> {
        F::validate(request)?;
        let (fleet, routes) = self.routes(F::model(request)).await?;
        let deadline = self.deadline(started, deadline);
        let raw = F::raw(request);
        let mut last = None;
        for route in routes {
            let body = Bytes::from(F::body(request, &route.model, true));
            let call = |attempt: Attempt| {
                let url = fleet.url::<F>(attempt.index);
                let body = body.clone();
                async move {
                    let endpoint = attempt.endpoint;
                    let request = endpoint
                        .request(reqwest::Method::POST, url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .header(reqwest::header::ACCEPT, "text/event-stream")
                        .body(body);
                    let response = endpoint.send(request, attempt.limit).await?;
                    stream::open::<F>(response, raw).await
                }
            };
            let servers = Some(route.servers.as_slice());
            let ttft = self.settings.ttft_timeout;
            match fleet
                .router
                .call(&route.model, servers, Some(deadline), ttft, call)
                .await
            {
                Ok(opened) => {
                    let metrics = self.metrics.clone();
                    return Ok(stream::committed(
                        opened,
                        route.model,
                        started,
                        deadline,
                        raw,
                        metrics,
                    ));
                }
                Err(error) => {
                    let error = llm_error::<F>(&route.model, error, ttft);
                    if !falls_back(&error) {
                        return Err(error);
                    }
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| LlmError::ModelNotFound(F::model(request).to_string())))
    }

    /// The metrics label for a requested name: the model it resolves to, or `unknown`, so
    /// a caller making up names cannot make up time series.
    fn label(&self, requested: &str) -> String {
        let route = self.fleet.as_ref().and_then(|f| f.catalog.route(requested));
        route.map_or_else(|| "unknown".to_string(), |r| r.model)
    }

    /// The caller's deadline, never later than `llm.request_timeout_ms` from now.
    fn deadline(&self, started: Instant, caller: Option<Instant>) -> Instant {
        let own = started + self.settings.request_timeout;
        caller.map_or(own, |d| d.min(own))
    }

    /// `model` and its fallbacks that some server serves now, in order.
    async fn routes(&self, model: &str) -> Result<(&Fleet, Vec<Route>), LlmError> {
        let Some(fleet) = &self.fleet else {
            return Err(LlmError::ModelNotFound(format!(
                "the model `{}` does not exist: no LLM server is configured (add [[llm.servers]])",
                crate::error::quote(model)
            )));
        };
        let first = match fleet.catalog.route(model) {
            Some(route) => Some(route),
            None => {
                fleet.refresh().await;
                fleet.catalog.route(model)
            }
        };
        let Some(first) = first else {
            let known = fleet.catalog.known();
            return Err(LlmError::ModelNotFound(format!(
                "the model `{}` does not exist: no LLM server serves it (served: {})",
                crate::error::quote(model),
                if known.is_empty() {
                    "none yet".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        let fallbacks = fleet
            .catalog
            .fallbacks(&first.model)
            .iter()
            .chain(fleet.catalog.fallbacks(model))
            .filter_map(|m| fleet.catalog.route(m));
        let mut routes = vec![first.clone()];
        for route in fallbacks {
            if !routes.iter().any(|r| r.model == route.model) {
                routes.push(route);
            }
        }
        Ok((fleet, routes))
    }

    pub fn close(&self) {
        if let Some(fleet) = &self.fleet {
            fleet.close();
        }
    }
}

/// Whether the next fallback model should be tried: the servers could not answer, as opposed
/// to refusing the request itself.
fn falls_back(error: &LlmError) -> bool {
    matches!(
        error,
        LlmError::Unavailable { .. }
            | LlmError::Overloaded { .. }
            | LlmError::Upstream { .. }
            | LlmError::DeadlineExceeded(_)
    )
}

/// The one mapping of a routing failure to the LLM service's error.
fn llm_error<F: Flavor>(model: &str, error: RouteError, ttft: Duration) -> LlmError {
    match error {
        RouteError::Refused { endpoint, error } => {
            let (message, param) = match &error {
                AttemptError::Status { error, .. } => (error.message.clone(), error.param.clone()),
                other => (other.to_string(), None),
            };
            let context = param.as_deref() == Some("input_tokens")
                || message.contains("maximum context length");
            let message = format!("model `{model}`: {endpoint} refused the request: {message}");
            match context {
                true => LlmError::InvalidInput {
                    param: Some(F::INPUT_PARAM.to_string()),
                    message,
                    code: Some("context_length_exceeded"),
                },
                false => LlmError::InvalidInput {
                    param,
                    message,
                    code: None,
                },
            }
        }
        RouteError::Unavailable {
            reason,
            retry_after,
            last,
        } => match last {
            Some(AttemptError::Status { code: 429, .. }) => LlmError::Overloaded {
                model: model.to_string(),
                reason,
                retry_after,
            },
            Some(AttemptError::Timeout(limit)) if limit >= ttft => {
                LlmError::DeadlineExceeded(format!(
                    "model `{model}`: no server sent a first chunk within {}ms \
                     (llm.ttft_timeout_ms); {reason}",
                    ttft.as_millis()
                ))
            }
            _ => LlmError::Unavailable {
                model: model.to_string(),
                reason,
                retry_after,
            },
        },
        RouteError::Upstream {
            endpoint,
            error: AttemptError::Status {
                code: 404, error, ..
            },
        } => LlmError::ModelNotFound(format!(
            "the model `{model}` does not exist on {endpoint}: {}",
            error.message
        )),
        RouteError::Upstream { endpoint, error } => LlmError::Upstream {
            model: model.to_string(),
            endpoint,
            message: error.to_string(),
        },
        RouteError::DeadlineExceeded { elapsed } => LlmError::DeadlineExceeded(format!(
            "model `{model}`: no answer within {}ms (llm.request_timeout_ms or the caller's \
             deadline)",
            elapsed.as_millis()
        )),
    }
}
