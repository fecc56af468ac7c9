//! `POST /v1/chat/completions` and `POST /v1/completions`: OpenAI's JSON in, a unary
//! answer or an SSE stream out. A stream's chunks are written as they arrive; a failure after
//! the first one is an in-band `data: {"error": ...}` event, then `[DONE]`, as vLLM does.

use std::convert::Infallible;

use axum::{
    Json,
    response::{
        IntoResponse, Response,
        sse::{Event, Sse},
    },
};
use citadel_proto::v1::{ChatRequest, CompleteRequest};
use futures_util::{Stream, StreamExt, stream};
use serde_json::Value;
use tonic::{Status, codec::Streaming};

use crate::{
    completions::{self as wire, Delivery},
    error::ApiError,
    extract,
    mesh_client::Mesh,
};

pub async fn chat(
    state: Mesh,
    extract::Json(body): extract::Json<Value>,
) -> Result<Response, ApiError> {
    let (request, delivery) = wire::chat_request(body)?;
    let mut client = state.completions.clone();
    if !delivery.stream {
        let call = client.chat(state.llm_request(request));
        let answer = state.call_llm(call).await?;
        return Ok(Json(wire::chat_response_json(&answer)).into_response());
    }
    // OpenAI's chunk format is the server's: pass its JSON on rather than rebuild it.
    let request = ChatRequest {
        raw_chunks: true,
        ..request
    };
    let call = client.chat_stream(state.llm_request(request));
    let chunks = state.call_llm(call).await?;
    Ok(sse(chunks, delivery, |c, usage| {
        if !c.raw_json.is_empty() {
            return raw_event(&c.raw_json, c.usage.is_some(), usage);
        }
        let usage_only = c.choices.is_empty() && c.usage.is_some();
        (!usage_only || usage).then(|| data(&wire::chat_chunk_json(c, usage)))
    }))
}

pub async fn complete(
    state: Mesh,
    extract::Json(body): extract::Json<Value>,
) -> Result<Response, ApiError> {
    let (request, delivery) = wire::complete_request(body)?;
    let mut client = state.completions.clone();
    if !delivery.stream {
        let call = client.complete(state.llm_request(request));
        let answer = state.call_llm(call).await?;
        return Ok(Json(wire::complete_response_json(&answer)).into_response());
    }
    let request = CompleteRequest {
        raw_chunks: true,
        ..request
    };
    let call = client.complete_stream(state.llm_request(request));
    let chunks = state.call_llm(call).await?;
    Ok(sse(chunks, delivery, |c, usage| {
        if !c.raw_json.is_empty() {
            return raw_event(&c.raw_json, c.usage.is_some(), usage);
        }
        let usage_only = c.choices.is_empty() && c.usage.is_some();
        (!usage_only || usage).then(|| data(&wire::complete_chunk_json(c, usage)))
    }))
}

/// A chunk as the server wrote it. The usage chunk (no choices) reaches only a caller that
/// asked for usage, and so do the `"usage":null` fields the forced `include_usage` adds.
fn raw_event(raw: &[u8], has_usage: bool, include_usage: bool) -> Option<Event> {
    let text = String::from_utf8_lossy(raw);
    let usage_only = has_usage && text.contains("\"choices\":[]");
    if usage_only && !include_usage {
        return None;
    }
    Some(match include_usage {
        true => Event::default().data(text),
        false => Event::default().data(text.replace(",\"usage\":null", "")),
    })
}

/// The gRPC stream as SSE frames. `render` gives a chunk's event, or `None` to leave it out
/// (the usage chunk a caller did not ask for).
fn sse<C: Send + 'static>(
    chunks: Streaming<C>,
    delivery: Delivery,
    render: fn(&C, bool) -> Option<Event>,
) -> Response {
    let include_usage = delivery.include_usage;
    let events = chunks
        .map(move |item| match item {
            Ok(chunk) => render(&chunk, include_usage).map(Ok),
            Err(status) => Some(Err(status)),
        })
        .filter_map(std::future::ready);
    Sse::new(frames(events)).into_response()
}

fn data(json: &Value) -> Event {
    Event::default().data(json.to_string())
}

/// Ends with `[DONE]` either way; a failure first becomes an error event, and nothing after
/// it is read.
fn frames(
    events: impl Stream<Item = Result<Event, Status>> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let mut failed = false;
    let body = events
        .take_while(move |item| {
            let go = !failed;
            failed |= item.is_err();
            std::future::ready(go)
        })
        .map(|item| {
            Ok(match item {
                Ok(event) => event,
                Err(status) => {
                    let error = ApiError::from(status);
                    tracing::warn!(message = %error.message, "completion stream ended by an error");
                    data(&error.body())
                }
            })
        });
    body.chain(stream::once(async { Ok(Event::default().data("[DONE]")) }))
}
