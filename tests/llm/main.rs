//! LLM coordination (issue 10) over real sockets: the real binary in front of stand-in vLLM
//! servers (`citadel_standin::llm`), reached the way users reach it — OpenAI's REST and SSE
//! at the edge, `citadel.v1.CompletionService` on the gRPC port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod faults;
mod grpc;
mod rest;
mod streams;
mod workflows;

use std::time::{Duration, Instant};

use citadel_standin::llm::{LlmBehaviour, LlmModelSpec, LlmStandIn, LlmStandInConfig};
use futures_util::StreamExt;
use serde_json::{Value, json};

use common::{Server, http};

pub const MODEL: &str = "standin-llm";

pub async fn standin(models: &[(&str, u32)]) -> LlmStandIn {
    let models = models
        .iter()
        .map(|(id, len)| LlmModelSpec::new(*id, *len))
        .collect();
    LlmStandIn::start(LlmStandInConfig { models })
        .await
        .expect("start the vLLM stand-in")
}

pub async fn one_standin() -> LlmStandIn {
    standin(&[(MODEL, 4096)]).await
}

/// `[[llm.servers]]` for `servers` (named llm-0, llm-1, ...), quick retries and breakers, and
/// `extra` keys appended. The in-process embedding models stay (they are the defaults).
pub fn config(servers: &[&LlmStandIn], extra: &str) -> String {
    let mut toml = String::from(
        "[upstream]\nprobe_interval_ms = 0\n[upstream.retry]\nmax_attempts = 3\n\
         initial_backoff_ms = 5\nmax_backoff_ms = 50\n[upstream.breaker]\n\
         failure_threshold = 3\nopen_ms = 500\n",
    );
    for (i, s) in servers.iter().enumerate() {
        toml.push_str(&format!(
            "[[llm.servers]]\nname = \"llm-{i}\"\nurl = \"{}\"\n",
            s.url()
        ));
    }
    toml.push_str(extra);
    toml
}

pub fn serve(servers: &[&LlmStandIn], extra: &str) -> Server {
    Server::with_config(&config(servers, extra))
}

pub fn chat_body(text: &str) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 4})
}

pub async fn post(
    server: &Server,
    path: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = http()
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, json)
}

/// One SSE stream, read to its end: each `data:` payload (JSON, or the string `[DONE]`) with
/// the time it arrived since the request was sent.
pub struct Sse {
    pub status: u16,
    pub content_type: String,
    pub events: Vec<(Value, Duration)>,
}

impl Sse {
    pub fn chunks(&self) -> Vec<&Value> {
        self.events
            .iter()
            .map(|(e, _)| e)
            .filter(|e| e.is_object())
            .collect()
    }

    pub fn done(&self) -> bool {
        self.events.last().is_some_and(|(e, _)| e == "[DONE]")
    }

    /// The concatenated `delta.content` (chat) or `text` (completions) of choice 0.
    pub fn text(&self) -> String {
        self.chunks()
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .filter_map(|c| c["delta"]["content"].as_str().or(c["text"].as_str()))
            .collect()
    }

    pub fn error(&self) -> Option<&Value> {
        self.chunks().into_iter().find(|c| c.get("error").is_some())
    }
}

pub async fn sse(server: &Server, path: &str, body: &Value) -> Sse {
    let started = Instant::now();
    let response = http()
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while let Some(piece) = body.next().await {
        let Ok(piece) = piece else { break };
        buffer.push_str(&String::from_utf8_lossy(&piece));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    let value = serde_json::from_str(data).unwrap_or(Value::String(data.into()));
                    events.push((value, started.elapsed()));
                }
            }
        }
    }
    if status != 200 && events.is_empty() {
        let value = serde_json::from_str(&buffer).unwrap_or(Value::String(buffer));
        events.push((value, started.elapsed()));
    }
    Sse {
        status,
        content_type,
        events,
    }
}

pub fn behaviour(f: impl FnOnce(&mut LlmBehaviour)) -> LlmBehaviour {
    let mut b = LlmBehaviour::default();
    f(&mut b);
    b
}

/// Polls `check` every 5 ms until it holds or `within` passes; how long it took.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if check() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}
