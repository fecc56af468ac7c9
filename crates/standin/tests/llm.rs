//! The vLLM stand-in over real sockets, through a plain HTTP/1.1 client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use citadel_standin::llm::{LlmBehaviour, LlmModelSpec, LlmStandIn, LlmStandInConfig};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    sender.send_request(request).await.unwrap()
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, hyper::HeaderMap, Bytes) {
    let response = send(addr, method, path, body).await;
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, body) = call(addr, "POST", path, Some(&body)).await;
    (status, serde_json::from_slice(&body).unwrap())
}

/// Reads a stream's body to its end: the `data:` payloads, and whether it ended cleanly.
async fn read_stream(response: Response<Incoming>) -> (Vec<String>, bool) {
    let mut body = response.into_body();
    let mut data = Vec::new();
    let clean = loop {
        match body.frame().await {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(frame)) => data.extend_from_slice(&frame.into_data().unwrap_or_default()),
        }
    };
    let text = String::from_utf8(data).unwrap();
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "torn frame: {text:?}"
    );
    let frames = text
        .split_terminator("\n\n")
        .map(|f| f.strip_prefix("data: ").unwrap().to_string())
        .collect();
    (frames, clean)
}

fn parse(frames: &[String]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| *f != "[DONE]")
        .map(|f| serde_json::from_str(f).unwrap())
        .collect()
}

async fn standin(behaviour: LlmBehaviour) -> LlmStandIn {
    let config = LlmStandInConfig {
        models: vec![
            LlmModelSpec::new("standin-llm", 4096),
            LlmModelSpec::new("small", 10),
        ],
    };
    let standin = LlmStandIn::start(config).await.unwrap();
    standin.set_behaviour(behaviour);
    standin
}

fn chat(content: &str) -> Value {
    json!({"model": "standin-llm", "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn models_health_and_metrics() {
    let s = standin(LlmBehaviour::default()).await;
    let (status, _, body) = call(s.addr, "GET", "/v1/models", None).await;
    assert_eq!(status, StatusCode::OK);
    let models: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(models["object"], "list");
    let first = &models["data"][0];
    assert_eq!(
        (first["id"].as_str(), first["object"].as_str()),
        (Some("standin-llm"), Some("model"))
    );
    assert_eq!(
        (first["owned_by"].as_str(), first["root"].as_str()),
        (Some("vllm"), Some("standin-llm"))
    );
    assert_eq!(
        (first["max_model_len"].as_u64(), first["parent"].is_null()),
        (Some(4096), true)
    );
    assert_eq!(models["data"][1]["max_model_len"], 10);

    let (status, _, body) = call(s.addr, "GET", "/health", None).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    let (_, _, body) = call(s.addr, "GET", "/metrics", None).await;
    let metrics = String::from_utf8(body.to_vec()).unwrap();
    for line in [
        "# TYPE vllm:num_requests_running gauge",
        "vllm:num_requests_running{model_name=\"standin-llm\"} 0",
        "vllm:num_requests_waiting{model_name=\"small\"} 0",
        "vllm:kv_cache_usage_perc{model_name=\"standin-llm\"} 0.0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from\n{metrics}"
        );
    }
}

#[tokio::test]
async fn unary_chat_and_text() {
    let s = standin(LlmBehaviour::default()).await;
    let mut request = chat("four words of prompt");
    request["max_tokens"] = json!(3);
    request["top_k"] = json!(5);
    request["chat_template_kwargs"] = json!({"enable_thinking": false});
    let (status, answer) = post(s.addr, "/v1/chat/completions", request.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(answer["object"], "chat.completion");
    let choice = &answer["choices"][0];
    assert_eq!(choice["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7})
    );
    assert_eq!(s.stats().last_request, Some(request));

    s.set_behaviour(LlmBehaviour {
        tokens: Some(2),
        ..Default::default()
    });
    let text = json!({"model": "standin-llm", "prompt": ["a b", "c"], "seed": 7, "n": 2});
    let (_, answer) = post(s.addr, "/v1/completions", text).await;
    assert_eq!(answer["object"], "text_completion");
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    assert_eq!(choices[3]["index"], 3);
    assert_eq!(
        (
            choices[0]["text"].as_str(),
            choices[0]["finish_reason"].as_str()
        ),
        (Some("s7t0 s7t1 "), Some("stop"))
    );
    assert_eq!(answer["usage"]["prompt_tokens"], 3);
    assert_eq!(answer["usage"]["completion_tokens"], 8);
    let stats = s.stats();
    assert_eq!(
        (
            stats.requests,
            stats.completed,
            stats.aborted,
            stats.in_flight
        ),
        (2, 2, 0, 0)
    );
}

#[tokio::test]
async fn streaming_chat_with_usage() {
    let s = standin(LlmBehaviour {
        tokens: Some(3),
        itl_ms: 1,
        ..Default::default()
    })
    .await;
    let mut request = chat("hello there");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let response = send(s.addr, "POST", "/v1/chat/completions", Some(&request)).await;
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let (frames, clean) = read_stream(response).await;
    assert!(clean);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    let chunks = parse(&frames);
    assert_eq!(chunks.len(), 6, "{frames:#?}");
    let id = chunks[0]["id"].as_str().unwrap();
    for chunk in &chunks {
        assert_eq!(
            (chunk["id"].as_str(), chunk["object"].as_str()),
            (Some(id), Some("chat.completion.chunk"))
        );
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let content: Vec<&str> = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, ["tok0 ", "tok1 ", "tok2 "]);
    for chunk in &chunks[..5] {
        assert!(chunk["usage"].is_null() && chunk.get("usage").is_some());
    }
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(
        chunks[5]["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})
    );
    assert_eq!(
        s.stats().last_request.unwrap()["stream_options"]["include_usage"],
        true
    );

    // Without include_usage: no usage key, no usage chunk; a text completion's chunks.
    let text = json!({"model": "standin-llm", "prompt": "x", "stream": true, "max_tokens": 2});
    let (frames, _) = read_stream(send(s.addr, "POST", "/v1/completions", Some(&text)).await).await;
    let chunks = parse(&frames);
    assert_eq!(chunks.len(), 3);
    assert!(
        chunks
            .iter()
            .all(|c| c.get("usage").is_none() && c["object"] == "text_completion")
    );
    assert_eq!(chunks[1]["choices"][0]["text"], "tok1 ");
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "length");

    // n = 2: the choices interleave, one choice per chunk.
    let chat2 = json!({"messages": [{"role": "user", "content": "x"}], "stream": true, "n": 2, "max_tokens": 2});
    let response = send(s.addr, "POST", "/v1/chat/completions", Some(&chat2)).await;
    let chunks = parse(&read_stream(response).await.0);
    let order: Vec<(u64, String)> = chunks
        .iter()
        .map(|c| {
            let choice = &c["choices"][0];
            let delta = &choice["delta"];
            let what = delta
                .get("role")
                .or(delta.get("content"))
                .or(choice.get("finish_reason"));
            (
                choice["index"].as_u64().unwrap(),
                what.unwrap().as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        (0, "assistant"),
        (1, "assistant"),
        (0, "tok0 "),
        (1, "tok0 "),
        (0, "tok1 "),
        (1, "tok1 "),
        (0, "length"),
        (1, "length"),
    ];
    assert_eq!(order, expected.map(|(i, w)| (i, w.to_string())));
    assert_eq!(
        chunks[0]["model"], "standin-llm",
        "a request without a model gets the first"
    );
    let stats = s.stats();
    assert_eq!((stats.streams, stats.completed, stats.in_flight), (3, 3, 0));
}

fn tool_request(stream: bool) -> Value {
    json!({
        "model": "standin-llm", "stream": stream,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "weather in \"Paris\""}]}],
        "tools": [
            {"type": "function", "function": {"name": "search", "parameters": {}}},
            {"type": "function", "function": {"name": "weather", "parameters": {}}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
    })
}

#[tokio::test]
async fn tool_rule() {
    let s = standin(LlmBehaviour::default()).await;
    let (_, answer) = post(s.addr, "/v1/chat/completions", tool_request(false)).await;
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(
        (call["type"].as_str(), call["function"]["name"].as_str()),
        (Some("function"), Some("weather"))
    );
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"input": "weather in \"Paris\""}));

    let response = send(
        s.addr,
        "POST",
        "/v1/chat/completions",
        Some(&tool_request(true)),
    )
    .await;
    let chunks = parse(&read_stream(response).await.0);
    let first = &chunks[1]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(
        (
            first["function"]["name"].as_str(),
            first["function"]["arguments"].as_str()
        ),
        (Some("weather"), Some(""))
    );
    assert_ne!(first["id"], call["id"]);
    let pieces: Vec<&str> = chunks[2..chunks.len() - 1]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(pieces.len() > 2 && pieces.iter().all(|p| p.chars().count() <= 8));
    assert_eq!(
        serde_json::from_str::<Value>(&pieces.concat()).unwrap(),
        arguments
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // The tool's answer comes back: content, not another call. tool_choice "none": content.
    let mut request = tool_request(false);
    request["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "tool", "content": "sunny", "tool_call_id": "call_0"}));
    let (_, answer) = post(s.addr, "/v1/chat/completions", request).await;
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "tool result: sunny "
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let mut request = tool_request(false);
    request["tool_choice"] = json!("none");
    let (_, answer) = post(s.addr, "/v1/chat/completions", request).await;
    assert_eq!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len(),
        10 * 5 + 6 * 6
    );
}

#[tokio::test]
async fn validation_errors() {
    let s = standin(LlmBehaviour {
        tokens: Some(4),
        ..Default::default()
    })
    .await;
    let mut request = chat("one two three four five six seven");
    request["model"] = json!("small");
    let (status, error) = post(s.addr, "/v1/chat/completions", request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error["error"]["message"],
        "This model's maximum context length is 10 tokens. However, you requested 4 output tokens and your prompt contains at least 7 input tokens, for a total of at least 11 tokens. Please reduce the length of the input prompt or the number of requested output tokens. (parameter=input_tokens, value=7)"
    );
    assert_eq!(
        (
            error["error"]["type"].as_str(),
            error["error"]["param"].as_str()
        ),
        (Some("BadRequestError"), Some("input_tokens"))
    );
    assert_eq!(error["error"]["code"], 400);

    let mut request = chat("hi");
    request["model"] = json!("gpt-9");
    let (status, error) = post(s.addr, "/v1/chat/completions", request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        error,
        json!({"error": {"message": "The model `gpt-9` does not exist.", "type": "NotFoundError", "param": "model", "code": 404}})
    );

    let (status, _, body) = call(s.addr, "POST", "/v1/completions", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["type"],
        "BadRequestError"
    );
    let (status, _) = post(
        s.addr,
        "/v1/chat/completions",
        json!({"model": "standin-llm"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn fail_next_with_retry_after_and_flat_errors() {
    let s = standin(LlmBehaviour {
        fail_next: vec![429, 503],
        retry_after: Some(2),
        ..Default::default()
    })
    .await;
    let (status, headers, body) =
        call(s.addr, "POST", "/v1/chat/completions", Some(&chat("hi"))).await;
    assert_eq!(
        (status, headers["retry-after"].to_str().unwrap()),
        (StatusCode::TOO_MANY_REQUESTS, "2")
    );
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (
            error["error"]["type"].as_str(),
            error["error"]["code"].as_u64()
        ),
        (Some("RateLimitError"), Some(429))
    );
    s.set_behaviour(LlmBehaviour {
        fail_next: vec![503],
        flat_errors: true,
        ..Default::default()
    });
    let (status, headers, body) =
        call(s.addr, "POST", "/v1/chat/completions", Some(&chat("hi"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.get("retry-after").is_none());
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (error["object"].as_str(), error["type"].as_str()),
        (Some("error"), Some("ServiceUnavailableError"))
    );
    assert_eq!(
        (error["code"].as_u64(), error.get("error")),
        (Some(503), None)
    );
    let (status, _) = post(s.addr, "/v1/chat/completions", chat("hi")).await;
    assert_eq!(status, StatusCode::OK);
    let stats = s.stats();
    assert_eq!((stats.requests, stats.completed, stats.aborted), (3, 1, 0));
}

fn stream_request(max_tokens: u32) -> Value {
    let mut request = chat("hi");
    request["stream"] = json!(true);
    request["max_tokens"] = json!(max_tokens);
    request
}

#[tokio::test]
async fn cut_malformed_and_stall() {
    let s = standin(LlmBehaviour {
        cut_after: Some(2),
        ..Default::default()
    })
    .await;
    let response = send(
        s.addr,
        "POST",
        "/v1/chat/completions",
        Some(&stream_request(5)),
    )
    .await;
    let (frames, clean) = read_stream(response).await;
    assert!(!clean, "a cut stream must not end cleanly");
    assert_eq!(frames.len(), 3, "role + 2 content chunks: {frames:?}");
    assert!(!frames.iter().any(|f| f == "[DONE]"));

    s.set_behaviour(LlmBehaviour {
        malformed_after: Some(1),
        ..Default::default()
    });
    let response = send(
        s.addr,
        "POST",
        "/v1/chat/completions",
        Some(&stream_request(3)),
    )
    .await;
    let (frames, clean) = read_stream(response).await;
    assert!(clean);
    assert_eq!(frames[2], "{not json");
    assert_eq!(frames.len(), 7);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));

    s.set_behaviour(LlmBehaviour {
        stall_after: Some(1),
        ..Default::default()
    });
    let response = send(
        s.addr,
        "POST",
        "/v1/chat/completions",
        Some(&stream_request(3)),
    )
    .await;
    let mut body = response.into_body();
    let mut seen = Vec::new();
    while String::from_utf8_lossy(&seen).matches("data: ").count() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(1), body.frame())
            .await
            .unwrap();
        seen.extend_from_slice(&frame.unwrap().unwrap().into_data().unwrap());
    }
    assert_eq!(String::from_utf8_lossy(&seen).matches("data: ").count(), 2);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), body.frame())
            .await
            .is_err()
    );
    assert_eq!(s.stats().in_flight, 1);
}

/// Polls until the stand-in has noticed one abort, for at most 200 ms.
async fn await_abort(s: &LlmStandIn) -> u64 {
    let start = Instant::now();
    while s.stats().aborted == 0 {
        assert!(
            start.elapsed() < Duration::from_millis(200),
            "abort not noticed: {:?}",
            s.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = s.stats();
    assert_eq!((stats.aborted, stats.in_flight, stats.completed), (1, 0, 0));
    stats.last_abort_after_last_write_ms.unwrap()
}

#[tokio::test]
async fn client_abort_mid_stream_is_noticed_promptly() {
    let s = standin(LlmBehaviour {
        itl_ms: 10,
        tokens: Some(100),
        ..Default::default()
    })
    .await;
    let response = send(
        s.addr,
        "POST",
        "/v1/chat/completions",
        Some(&stream_request(100)),
    )
    .await;
    let mut body = response.into_body();
    for _ in 0..3 {
        body.frame().await.unwrap().unwrap();
    }
    drop(body);
    assert!(await_abort(&s).await < 100);
}

#[tokio::test]
async fn client_abort_during_ttft_is_noticed() {
    let s = standin(LlmBehaviour {
        ttft_ms: 5_000,
        ..Default::default()
    })
    .await;
    let addr = s.addr;
    let pending =
        tokio::spawn(
            async move { call(addr, "POST", "/v1/chat/completions", Some(&chat("hi"))).await },
        );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.stats().in_flight, 1);
    let (_, _, metrics) = call(s.addr, "GET", "/metrics", None).await;
    assert!(
        String::from_utf8_lossy(&metrics)
            .contains("vllm:num_requests_running{model_name=\"standin-llm\"} 1")
    );
    pending.abort();
    await_abort(&s).await;
}

#[tokio::test]
async fn driven_over_http_and_stopped() {
    let s = standin(LlmBehaviour::default()).await;
    let behaviour = json!({"tokens": 1, "logprobs_ignored": true});
    let (status, _) = post(s.addr, "/_standin/behaviour", behaviour).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown behaviour fields are refused"
    );
    let (status, _) = post(s.addr, "/_standin/behaviour", json!({"tokens": 1})).await;
    assert_eq!(status, StatusCode::OK);
    let mut request = chat("hi");
    request["logprobs"] = json!(true);
    request["top_logprobs"] = json!(2);
    request["response_format"] = json!({"type": "json_object"});
    let (_, answer) = post(s.addr, "/v1/chat/completions", request).await;
    let choice = &answer["choices"][0];
    assert_eq!(choice["message"]["content"], r#"{"tokens": ["tok0"]}"#);
    let logprob = &choice["logprobs"]["content"][0];
    assert_eq!(logprob["top_logprobs"].as_array().unwrap().len(), 2);
    assert!(logprob["bytes"].is_array() && logprob["logprob"].is_f64());
    let (_, _, stats) = call(s.addr, "GET", "/_standin/stats", None).await;
    let stats: Value = serde_json::from_slice(&stats).unwrap();
    assert_eq!(
        (stats["requests"].as_u64(), stats["completed"].as_u64()),
        (Some(1), Some(1))
    );

    // A stream cut off by stop() ends unclean and is not the client's abort.
    s.set_behaviour(LlmBehaviour {
        itl_ms: 10,
        tokens: Some(100),
        ..Default::default()
    });
    let response = send(
        s.addr,
        "POST",
        "/v1/chat/completions",
        Some(&stream_request(100)),
    )
    .await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    s.stop();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stats = s.stats();
    assert_eq!((stats.in_flight, stats.aborted), (0, 0));
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err());
}
