//! The accept loop and routes, on bare hyper (HTTP/1.1, keep-alive, `TCP_NODELAY`) so the
//! stand-in adds as little as it can to a benchmark's baseline.

use std::{
    fmt::Write,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinSet};

use super::{
    LlmBehaviour, Shared,
    render::{self, ApiError, Meta},
    request::{self, Endpoint},
    stream::{LlmBody, SseBody},
    track::Tracker,
};

/// Returned by the service to make hyper drop the connection without answering.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset on purpose")
    }
}

impl std::error::Error for Reset {}

type Answer = Result<Response<LlmBody>, Reset>;

/// Serves until the task is aborted; aborting drops every connection with it.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, most likely: give connections a moment to close.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

async fn handle(request: Request<Incoming>, shared: Arc<Shared>) -> Answer {
    let (parts, body) = request.into_parts();
    if matches!(parts.uri.path(), "/v1/chat/completions" | "/v1/completions") {
        let traceparent = parts
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        shared.counters.traced(traceparent);
    }
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(Reset),
    };
    match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/chat/completions") => complete(shared, Endpoint::Chat, body).await,
        (&Method::POST, "/v1/completions") => complete(shared, Endpoint::Text, body).await,
        (&Method::GET, "/v1/models") => Ok(json(StatusCode::OK, models(&shared))),
        (&Method::GET, "/health") => Ok(response(StatusCode::OK, None, Vec::new())),
        (&Method::GET, "/metrics") => Ok(response(
            StatusCode::OK,
            Some("text/plain; version=0.0.4; charset=utf-8"),
            metrics(&shared).into_bytes(),
        )),
        (&Method::GET, "/_standin/stats") => Ok(json(
            StatusCode::OK,
            serde_json::to_vec(&shared.counters.snapshot()).unwrap_or_default(),
        )),
        (&Method::GET, "/_standin/behaviour") => Ok(json(
            StatusCode::OK,
            serde_json::to_vec(&shared.behaviour()).unwrap_or_default(),
        )),
        (&Method::POST, "/_standin/behaviour") => Ok(set_behaviour(&shared, &body)),
        _ => Ok(json(
            StatusCode::NOT_FOUND,
            br#"{"detail":"Not Found"}"#.to_vec(),
        )),
    }
}

/// A completion, unary or streamed, through the behaviour's failure modes first.
async fn complete(shared: Arc<Shared>, endpoint: Endpoint, body: Bytes) -> Answer {
    let mut tracker = Tracker::new(shared.clone());
    shared.counters.received(&body);
    let parsed = serde_json::from_slice::<Value>(&body);
    if let Ok(value) = &parsed
        && value.get("stream").and_then(Value::as_bool) == Some(true)
    {
        shared.counters.streaming();
    }
    let behaviour = shared.next_behaviour();
    if behaviour.reset {
        tracker.settle();
        return Err(Reset);
    }
    if behaviour.hang {
        // The tracker stays open: the client giving up counts as an abort.
        std::future::pending::<()>().await;
    }
    if let Some(code) = behaviour
        .fail_always
        .or(behaviour.fail_next.first().copied())
    {
        tracker.settle();
        let error = ApiError::new(code, format!("stand-in failing with {code}"), None);
        let flat = behaviour.flat_errors;
        return Ok(error_response(&error, flat, behaviour.retry_after));
    }
    let tokens = behaviour.tokens.unwrap_or(super::DEFAULT_TOKENS);
    let plan = parsed
        .map_err(|e| ApiError::new(400, format!("Invalid JSON: {e}"), None))
        .and_then(|value| request::plan(endpoint, &value, &shared, tokens));
    let plan = match plan {
        Ok(plan) => plan,
        Err(error) => {
            tracker.settle();
            return Ok(error_response(&error, behaviour.flat_errors, None));
        }
    };
    tracker.model(plan.model_index);
    if behaviour.ttft_ms > 0 {
        // hyper drops this future if the client closes meanwhile: an abort, noticed at once.
        tokio::time::sleep(Duration::from_millis(behaviour.ttft_ms)).await;
    }
    let meta = meta(&shared, endpoint);
    if plan.stream {
        let sse = SseBody::new(plan, &meta, &behaviour, tracker);
        let mut answer = Response::new(LlmBody::Sse(Box::new(sse)));
        answer.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        return Ok(answer);
    }
    let body = render::unary(&plan, &meta);
    tracker.complete();
    Ok(json(StatusCode::OK, body))
}

fn meta(shared: &Shared, endpoint: Endpoint) -> Meta {
    let n = shared.counters.ids.fetch_add(1, Ordering::Relaxed);
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Text => "cmpl",
    };
    Meta {
        id: format!(
            "{prefix}-{:016x}{:016x}",
            mix(shared.salt ^ n),
            mix(n.wrapping_add(shared.salt.rotate_left(17)))
        ),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    }
}

/// splitmix64: ids that look random and are unique per counter value.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn models(shared: &Shared) -> Vec<u8> {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let data: Vec<Value> = shared
        .config
        .models
        .iter()
        .map(|m| {
            json!({
                "id": m.id, "object": "model", "created": created, "owned_by": "vllm",
                "root": m.id, "parent": null, "max_model_len": m.max_model_len, "permission": [],
            })
        })
        .collect();
    json!({"object": "list", "data": data})
        .to_string()
        .into_bytes()
}

/// vLLM's load gauges; the KV cache fills by 1/64 per running request.
fn metrics(shared: &Shared) -> String {
    let models = &shared.config.models;
    let mut text = String::with_capacity(512);
    let families: [(&str, &str); 3] = [
        (
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
        ),
        (
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
        ),
    ];
    for (family, help) in families {
        let _ = writeln!(text, "# HELP {family} {help}\n# TYPE {family} gauge");
        for (index, model) in models.iter().enumerate() {
            let running = shared.counters.running(index);
            let value = match family {
                "vllm:num_requests_running" => running.to_string(),
                "vllm:num_requests_waiting" => "0".to_string(),
                _ => format!("{:?}", (running as f64 / 64.0).min(1.0)),
            };
            let _ = writeln!(text, "{family}{{model_name=\"{}\"}} {value}", model.id);
        }
    }
    text
}

fn set_behaviour(shared: &Shared, body: &[u8]) -> Response<LlmBody> {
    match serde_json::from_slice::<LlmBehaviour>(body) {
        Ok(behaviour) => {
            shared.set_behaviour(behaviour);
            json(StatusCode::OK, b"{}".to_vec())
        }
        Err(e) => json(
            StatusCode::BAD_REQUEST,
            json!({"error": e.to_string()}).to_string().into_bytes(),
        ),
    }
}

fn error_response(error: &ApiError, flat: bool, retry_after: Option<u64>) -> Response<LlmBody> {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut answer = json(status, error.body(flat));
    if let Some(seconds) = retry_after {
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    answer
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<LlmBody> {
    response(status, Some("application/json"), body)
}

fn response(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: Vec<u8>,
) -> Response<LlmBody> {
    let body = (!body.is_empty()).then(|| Bytes::from(body));
    let mut answer = Response::new(LlmBody::Full(body));
    *answer.status_mut() = status;
    if let Some(content_type) = content_type {
        answer
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    answer
}
