//! The LLM workflow kinds, run by `serve`'s worker through its own CompletionService:
//! `llm_batch` (progress per item; a retry does not redo finished items) and `llm_chain`
//! (steps that use the inputs and earlier answers).

use std::time::Duration;

use serde_json::json;

use super::*;

async fn submit(server: &Server, body: Value) -> String {
    let (status, _, created) = post(server, "/api/v1/workflows", &body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_string()
}

async fn finished(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let url = server.url(&format!("/api/v1/workflows/{id}"));
        let w: Value = http().get(url).send().await.unwrap().json().await.unwrap();
        if ["SUCCESS", "FAILURE", "CANCELLED"].contains(&w["state"].as_str().unwrap_or_default()) {
            return w;
        }
        assert!(Instant::now() < deadline, "not finished: {w}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const FAST_WORKER: &str = "[workflows]\npoll_interval_ms = 50\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_batch_answers_every_prompt_and_a_retry_skips_the_finished_ones() {
    let vllm = one_standin().await;
    let server = serve(&[&vllm], FAST_WORKER);
    let prompts = json!(["one", {"id": "b", "prompt": "two"},
                         {"id": "c", "messages": [{"role": "user", "content": "three"}]}]);
    let id = submit(
        &server,
        json!({"kind": "llm_batch",
        "params": {"model": MODEL, "prompts": prompts, "max_tokens": 2, "system": "terse"}}),
    )
    .await;
    let done = finished(&server, &id).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    let results = done["result"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[1]["id"], "b");
    assert!(
        results.iter().all(|r| r["content"] == "tok0 tok1 "),
        "{results:?}"
    );
    assert_eq!(done["result"]["usage"]["completion_tokens"], 6);
    assert_eq!(done["progress"]["done"], 3, "{done}");
    let sent = vllm.stats().last_request.unwrap();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "terse"})
    );

    // Six prompts one at a time; the server starts failing after the third has started, so
    // the first attempt ends RETRY with some items done. The retry must do only the rest.
    vllm.set_behaviour(behaviour(|b| b.ttft_ms = 150));
    let before = vllm.stats().completed;
    let id = submit(
        &server,
        json!({"kind": "llm_batch",
        "retry": {"max_attempts": 3, "initial_backoff_ms": 2000, "max_backoff_ms": 2000},
        "params": {"model": MODEL, "prompts": ["a", "b", "c", "d", "e", "f"],
                   "concurrency": 1, "max_tokens": 1}}),
    )
    .await;
    let third = eventually(Duration::from_secs(20), || vllm.stats().requests >= 6).await;
    assert!(third.is_some(), "{:?}", vllm.stats());
    vllm.set_behaviour(behaviour(|b| b.fail_always = Some(503)));
    // The attempt fails once its next item has used up the router's attempts.
    tokio::time::sleep(Duration::from_millis(400)).await;
    vllm.set_behaviour(LlmBehaviour::default());
    let done = finished(&server, &id).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let resumed = done["result"]["resumed"].as_u64().unwrap();
    assert!((2..6).contains(&resumed), "{done}");
    assert_eq!(done["result"]["results"].as_array().unwrap().len(), 6);
    assert_eq!(
        vllm.stats().completed - before,
        6,
        "no prompt was answered twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_chain_feeds_inputs_and_earlier_answers_forward() {
    let vllm = one_standin().await;
    let server = serve(&[&vllm], FAST_WORKER);
    let steps = json!([
        {"name": "outline", "prompt": "outline {{inputs.topic}}", "max_tokens": 2},
        {"name": "draft", "prompt": "expand: {{steps.outline}}", "system": "be kind", "max_tokens": 3},
    ]);
    let id = submit(
        &server,
        json!({"kind": "llm_chain",
        "params": {"model": MODEL, "inputs": {"topic": "citadel"}, "steps": steps}}),
    )
    .await;
    let done = finished(&server, &id).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["result"]["outputs"]["outline"], "tok0 tok1 ");
    assert_eq!(done["result"]["final"], "tok0 tok1 tok2 ");
    let sent = vllm.stats().last_request.unwrap();
    assert_eq!(
        sent["messages"][1]["content"], "expand: tok0 tok1 ",
        "{sent}"
    );

    let bad = [
        json!({"model": MODEL, "steps": [{"name": "a", "prompt": "{{steps.b}}"}]}),
        json!({"model": MODEL, "steps": []}),
        json!({"steps": [{"name": "a", "prompt": "x"}]}),
    ];
    for params in bad {
        let (status, _, answer) = post(
            &server,
            "/api/v1/workflows",
            &json!({"kind": "llm_chain", "params": params}),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["param"], "params", "{answer}");
    }
    let (status, _, answer) = post(
        &server,
        "/api/v1/workflows",
        &json!({"kind": "llm_batch", "params": {"prompts": ["x"]}}),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["param"].clone()),
        (400, json!("params")),
        "{answer}"
    );
}
