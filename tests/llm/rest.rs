//! The REST edge as the OpenAI SDKs use it: unary and streamed chat and text completions,
//! usage, pass-through of vLLM's own fields, `/v1/models`, `/health/detailed`, bad input.

use serde_json::json;

use super::*;
use crate::common::{assert_openai_error, get_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_text_completions_unary_and_streamed() {
    let vllm = one_standin().await;
    let server = serve(&[&vllm], "");

    let (status, _, answer) =
        post(&server, "/v1/chat/completions", &chat_body("hello there")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], MODEL);
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 "
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["prompt_tokens"], 2);
    assert_eq!(answer["usage"]["completion_tokens"], 4);

    let mut body = chat_body("hello there");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let stream = sse(&server, "/v1/chat/completions", &body).await;
    assert_eq!(stream.status, 200);
    assert!(
        stream.content_type.starts_with("text/event-stream"),
        "{}",
        stream.content_type
    );
    assert!(stream.done(), "ends with [DONE]");
    let chunks = stream.chunks();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(stream.text(), "tok0 tok1 tok2 tok3 ");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "the usage chunk has no choices");
    assert_eq!(last["usage"]["completion_tokens"], 4);
    assert!(
        chunks[0]["usage"].is_null(),
        "other chunks carry usage: null"
    );
    let finish = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish.collect::<Vec<_>>(), ["length"]);

    // Without include_usage the client sees no usage at all, though it was asked upstream.
    body.as_object_mut().unwrap().remove("stream_options");
    let stream = sse(&server, "/v1/chat/completions", &body).await;
    assert!(stream.chunks().iter().all(|c| c.get("usage").is_none()));
    assert_eq!(stream.text(), "tok0 tok1 tok2 tok3 ");
    let upstream = vllm.stats().last_request.unwrap();
    assert_eq!(upstream["stream_options"]["include_usage"], true);

    let text = json!({"model": MODEL, "prompt": "once upon", "max_tokens": 3});
    let (status, _, answer) = post(&server, "/v1/completions", &text).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["text"], "tok0 tok1 tok2 ");
    let mut streamed = text.clone();
    streamed["stream"] = json!(true);
    let stream = sse(&server, "/v1/completions", &streamed).await;
    assert_eq!(stream.text(), "tok0 tok1 tok2 ");
    assert!(stream.done());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_fields_pass_through_unchanged() {
    let vllm = one_standin().await;
    let server = serve(&[&vllm], "");
    let mut body = chat_body("hi");
    body["top_k"] = json!(20);
    body["min_p"] = json!(0.05);
    body["chat_template_kwargs"] = json!({"enable_thinking": false});
    body["seed"] = json!(7);
    body["temperature"] = json!(0.2);
    let (status, _, answer) = post(&server, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "s7t0 s7t1 s7t2 s7t3 "
    );
    let upstream = vllm.stats().last_request.unwrap();
    assert_eq!(upstream["top_k"], 20);
    assert_eq!(upstream["min_p"], 0.05);
    assert_eq!(
        upstream["chat_template_kwargs"],
        json!({"enable_thinking": false})
    );
    assert_eq!(upstream["temperature"], 0.2);
    assert_eq!(upstream["stream"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_openai_errors() {
    let vllm = standin(&[(MODEL, 64)]).await;
    let server = serve(&[&vllm], "");
    let cases = [
        (
            json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "model",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            400,
            "model",
        ),
        (json!({"model": MODEL, "messages": "hi"}), 400, "messages"),
        (json!({"model": MODEL, "messages": []}), 400, "messages"),
        (
            json!({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}),
            400,
            "messages[0].role",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
            400,
            "temperature",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
            400,
            "max_tokens",
        ),
    ];
    for (body, expected, param) in cases {
        let (status, _, answer) = post(&server, "/v1/chat/completions", &body).await;
        let error = assert_openai_error(status, &answer, expected);
        assert_eq!(error["param"], param, "{body}: {answer}");
    }
    let long = "word ".repeat(100);
    let (status, _, answer) = post(&server, "/v1/chat/completions", &chat_body(&long)).await;
    let error = assert_openai_error(status, &answer, 400);
    assert_eq!(error["code"], "context_length_exceeded", "{answer}");
    assert_eq!(error["param"], "messages");
    assert_eq!(
        vllm.stats().requests,
        1,
        "a context-length 400 is not retried"
    );

    let response = http()
        .post(server.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer = response.json().await.unwrap();
    assert_openai_error(status, &answer, 400);
    let (status, _, answer) = post(
        &server,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": 3}),
    )
    .await;
    assert_eq!(assert_openai_error(status, &answer, 400)["param"], "prompt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_health_list_the_llm_fleet() {
    let a = standin(&[(MODEL, 8192), ("other-llm", 2048)]).await;
    let b = standin(&[(MODEL, 4096)]).await;
    let server = serve(&[&a, &b], "[llm.aliases]\ngpt-4o = \"standin-llm\"\n");
    let (status, list) = get_json(&server, "/v1/models").await;
    assert_eq!(status, 200);
    let data = list["data"].as_array().unwrap();
    let find = |id: &str| {
        data.iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        find("all-minilm")["backend"],
        "onnx",
        "embedding models stay listed"
    );
    let llm = find(MODEL);
    assert_eq!(llm["kind"], "llm");
    assert_eq!(llm["servers"], json!(["llm-0", "llm-1"]));
    assert_eq!(llm["max_model_len"], 4096, "the smallest of its servers'");
    assert_eq!(find("gpt-4o")["alias_of"], MODEL);
    assert_eq!(find("other-llm")["servers"], json!(["llm-0"]));
    let (status, one) = get_json(&server, "/v1/models/gpt-4o").await;
    assert_eq!((status, one["alias_of"].clone()), (200, json!(MODEL)));

    let (_, answer) = {
        let (s, _, a) = post(
            &server,
            "/v1/chat/completions",
            &json!({"model": "gpt-4o",
            "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}),
        )
        .await;
        (s, a)
    };
    assert_eq!(answer["model"], MODEL, "an alias is served by its model");

    let (_, health) = get_json(&server, "/health/detailed").await;
    let servers = health["components"]["llm"]["servers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(servers.len(), 2, "{health}");
    assert_eq!(servers[0]["name"], "llm-0");
    assert_eq!(servers[0]["breaker"], "closed");
    assert_eq!(servers[0]["models"], json!(["other-llm", MODEL]));
}
