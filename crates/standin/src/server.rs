//! The accept loop and request routing, on bare hyper so the stand-in adds as little as it can
//! to a benchmark's baseline.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinSet};

use crate::{Behaviour, Shared, wire};

/// Returned by the service to make hyper drop the connection without answering.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset on purpose")
    }
}

impl std::error::Error for Reset {}

type Answer = Result<Response<Full<Bytes>>, Reset>;

/// Serves until the task is aborted; aborting drops every connection with it.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

async fn handle(request: Request<Incoming>, shared: Arc<Shared>) -> Answer {
    let (parts, body) = request.into_parts();
    if parts.method == Method::POST {
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
    let path = parts.uri.path();
    match (&parts.method, path) {
        (&Method::GET, "/api/tags") => Ok(json(StatusCode::OK, wire::tags(&shared.config))),
        (&Method::GET, "/api/version") => Ok(json(StatusCode::OK, wire::version())),
        (&Method::GET, "/_standin/stats") => Ok(json(
            StatusCode::OK,
            serde_json::to_vec(&shared.counters.snapshot()).unwrap_or_default(),
        )),
        (&Method::POST, "/_standin/behaviour") => set_behaviour(&shared, &body),
        (&Method::POST, "/api/embed") => embed(&shared, wire::Protocol::Ollama, &body).await,
        (&Method::POST, "/v1/embeddings") => embed(&shared, wire::Protocol::OpenAi, &body).await,
        _ => Ok(json(
            StatusCode::NOT_FOUND,
            br#"{"error":"404 page not found"}"#.to_vec(),
        )),
    }
}

fn set_behaviour(shared: &Shared, body: &[u8]) -> Answer {
    match serde_json::from_slice::<Behaviour>(body) {
        Ok(behaviour) => {
            if let Ok(mut current) = shared.behaviour.lock() {
                *current = behaviour;
            }
            Ok(json(StatusCode::OK, b"{}".to_vec()))
        }
        Err(e) => Ok(json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": e.to_string()})
                .to_string()
                .into_bytes(),
        )),
    }
}

async fn embed(shared: &Shared, protocol: wire::Protocol, body: &[u8]) -> Answer {
    let request = match wire::parse(protocol, body) {
        Ok(request) => request,
        Err(message) => return Ok(json(StatusCode::BAD_REQUEST, protocol.error(&message))),
    };
    shared.counters.record(request.inputs.len());
    let behaviour = next_behaviour(shared);
    if behaviour.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
    }
    if behaviour.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if behaviour.reset {
        return Err(Reset);
    }
    if let Some(code) = behaviour
        .fail_always
        .or(behaviour.fail_next.first().copied())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json(
            status,
            protocol.error(&format!("stand-in failing with {code}")),
        );
        if let Some(seconds) = behaviour.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        return Ok(response);
    }
    if behaviour.malformed {
        return Ok(json(
            StatusCode::OK,
            br#"{"embeddings": [[0.1, 0.2"#.to_vec(),
        ));
    }
    let Some(&dims) = shared.config.models.get(&request.model) else {
        let message = format!(
            "model \"{}\" not found, try pulling it first",
            request.model
        );
        return Ok(json(StatusCode::NOT_FOUND, protocol.error(&message)));
    };
    let dims = if behaviour.wrong_dimensions {
        dims.saturating_sub(1)
    } else {
        dims
    };
    let base64 = request.base64 || behaviour.base64;
    Ok(json(
        StatusCode::OK,
        protocol.answer(&request, dims, base64),
    ))
}

/// The behaviour for this request; consumes one entry of `fail_next`.
fn next_behaviour(shared: &Shared) -> Behaviour {
    let Ok(mut current) = shared.behaviour.lock() else {
        return Behaviour::default();
    };
    let now = current.clone();
    if !current.fail_next.is_empty() {
        current.fail_next.remove(0);
    }
    now
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
