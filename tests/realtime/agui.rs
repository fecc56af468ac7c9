//! The AG-UI agent through the stand-in vLLM: the official clients (both versions) drive
//! real runs; an upstream failure ends in RUN_ERROR; a client that leaves cancels the model
//! call; the Copilot actions answer over REST.

use std::time::Duration;

use citadel_standin::llm::{LlmBehaviour, LlmModelSpec, LlmStandIn, LlmStandInConfig};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::{common, node};

const MODEL: &str = "standin-llm";

async fn standin() -> LlmStandIn {
    let models = vec![LlmModelSpec::new(MODEL, 8192)];
    LlmStandIn::start(LlmStandInConfig { models })
        .await
        .unwrap()
}

fn serve(llm: &LlmStandIn) -> common::Server {
    common::Server::with_config(&format!(
        "[upstream]\nprobe_interval_ms = 0\n[upstream.retry]\nmax_attempts = 1\n\
         [[llm.servers]]\nname = \"llm-0\"\nurl = \"{}\"\n[agui]\ndefault_model = \"{MODEL}\"\n",
        llm.url()
    ))
}

fn run_input(content: &str) -> Value {
    json!({"threadId": "t-1", "runId": "r-1", "state": {}, "messages": [
        {"id": "m-1", "role": "user", "content": content}], "tools": [], "context": [],
        "forwardedProps": {}})
}

/// The SSE answer's events, in order.
fn events(body: &str) -> Vec<Value> {
    assert!(!body.contains('\r'), "LF-only framing");
    body.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_clients_run_chats_actions_frontend_tools_and_state() {
    let llm = standin().await;
    let server = serve(&llm);
    for client in ["1", "0"] {
        let url = server.http.clone();
        tokio::task::spawn_blocking(move || node("agui.mjs", &["--client", client, "--url", &url]))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failure_ends_the_run_with_run_error() {
    let llm = standin().await;
    let server = serve(&llm);
    llm.set_behaviour(LlmBehaviour {
        fail_always: Some(500),
        ..Default::default()
    });
    let response = common::http()
        .post(server.url("/api/v1/agui"))
        .json(&run_input("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = events(&response.text().await.unwrap());
    assert_eq!(events.first().unwrap()["type"], "RUN_STARTED");
    assert_eq!(events.first().unwrap()["threadId"], "t-1");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "RUN_ERROR", "{events:?}");
    assert!(!last["message"].as_str().unwrap().is_empty());
    assert!(last["timestamp"].is_u64());

    // A body that is not a RunAgentInput is a 400 in OpenAI's shape, not a stream.
    let bad = common::http()
        .post(server.url("/api/v1/agui"))
        .json(&json!({"messages": "nope"}))
        .send()
        .await
        .unwrap();
    let status = bad.status().as_u16();
    let body: Value = bad.json().await.unwrap();
    common::assert_openai_error(status, &body, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_cancels_the_model_call() {
    let llm = standin().await;
    let server = serve(&llm);
    llm.set_behaviour(LlmBehaviour {
        itl_ms: 100,
        tokens: Some(200),
        ..Default::default()
    });
    let response = common::http()
        .post(server.url("/api/v1/agui"))
        .json(&run_input("tell me a long story"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("TEXT_MESSAGE_CONTENT") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(llm.stats().in_flight, 1);
    drop(body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while llm.stats().in_flight > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the model call was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = llm.stats();
    assert_eq!(stats.aborted, 1, "{stats:?}");
    assert_eq!(stats.completed, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copilot_actions_are_listed_and_run_without_a_model() {
    let server = common::Server::start();
    let (status, list) = common::get_json(&server, "/api/v1/copilot/actions").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["generate_embedding", "execute_workflow", "get_workflow"]
    );
    assert_eq!(list["data"][0]["parameters"]["required"], json!(["input"]));

    let invoke = |body: Value| {
        let request = common::http()
            .post(server.url("/api/v1/copilot/actions"))
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, embedded) =
        invoke(json!({"name": "generate_embedding", "arguments": {"input": ["a", "b"]}})).await;
    assert_eq!(status, 200, "{embedded}");
    assert_eq!(embedded["result"]["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        embedded["result"]["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        384
    );

    let run = json!({"name": "execute_workflow",
        "arguments": {"kind": "sleep", "params": {"ms": 100, "steps": 2}}});
    let (status, ran) = invoke(run).await;
    assert_eq!(status, 200, "{ran}");
    assert_eq!(ran["result"]["state"], "SUCCESS");
    let id = ran["result"]["id"].as_str().unwrap();
    let (_, got) = invoke(json!({"name": "get_workflow", "arguments": {"id": id}})).await;
    assert_eq!(got["result"]["id"], id);

    let (status, body) = invoke(json!({"name": "launch_rockets"})).await;
    common::assert_openai_error(status, &body, 404);
    let (status, body) = invoke(json!({"name": "get_workflow", "arguments": {}})).await;
    common::assert_openai_error(status, &body, 400);
    let (status, body) = invoke(json!({"name": "get_workflow", "arguments": {"id": "nope"}})).await;
    common::assert_openai_error(status, &body, 404);
}
