//! Streaming semantics: chunks leave as they arrive, a disconnect aborts upstream at once, and
//! a stream that fails after its first chunk ends with an error event, never silently.

use std::time::Duration;

use serde_json::json;

use super::*;

fn streamed(tokens: u32) -> Value {
    json!({"model": MODEL, "stream": true, "max_tokens": tokens,
           "messages": [{"role": "user", "content": "count"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_are_written_as_they_arrive() {
    let vllm = one_standin().await;
    vllm.set_behaviour(behaviour(|b| {
        b.ttft_ms = 50;
        b.itl_ms = 60;
    }));
    let server = serve(&[&vllm], "");
    let stream = sse(&server, "/v1/chat/completions", &streamed(6)).await;
    assert!(stream.done());
    let times: Vec<Duration> = stream
        .events
        .iter()
        .filter(|(e, _)| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        })
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(times.len(), 6, "{:?}", stream.events);
    // Buffered, every token would arrive at the end, together.
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(35), "{times:?}");
    }
    assert!(
        times[0] < Duration::from_millis(250),
        "first token late: {times:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_aborts_the_upstream_request_within_100ms() {
    let vllm = one_standin().await;
    vllm.set_behaviour(behaviour(|b| b.itl_ms = 20));
    let server = serve(&[&vllm], "");
    let response = http()
        .post(server.url("/v1/chat/completions"))
        .json(&streamed(500))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    for _ in 0..3 {
        body.next().await.unwrap().unwrap();
    }
    let dropped = Instant::now();
    drop(body);
    let seen = eventually(Duration::from_secs(2), || vllm.stats().aborted == 1).await;
    let took =
        seen.unwrap_or_else(|| panic!("the stand-in never saw the abort: {:?}", vllm.stats()));
    assert!(
        took < Duration::from_millis(100),
        "abort reached upstream after {took:?}"
    );
    assert!(dropped.elapsed() < Duration::from_secs(1));
    assert_eq!(vllm.stats().completed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_midway_ends_with_an_error_event() {
    let vllm = one_standin().await;
    vllm.set_behaviour(behaviour(|b| {
        b.cut_after = Some(3);
        b.itl_ms = 5;
    }));
    let server = serve(&[&vllm], "");
    let stream = sse(&server, "/v1/chat/completions", &streamed(10)).await;
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.text(),
        "tok0 tok1 tok2 ",
        "what came before the cut arrives"
    );
    let error = stream.error().expect("an error event");
    assert_eq!(error["error"]["code"], "upstream_error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[DONE]"),
        "{error}"
    );
    assert!(stream.done(), "the stream still closes with [DONE]");
    assert_eq!(
        vllm.stats().requests,
        1,
        "after the first chunk nothing is retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_ends_at_the_idle_limit() {
    let vllm = one_standin().await;
    vllm.set_behaviour(behaviour(|b| b.stall_after = Some(2)));
    let server = serve(&[&vllm], "[llm]\nstream_idle_timeout_ms = 300\n");
    let started = Instant::now();
    let stream = sse(&server, "/v1/chat/completions", &streamed(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let error = stream.error().expect("an error event");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("300ms"),
        "{error}"
    );
    assert!(stream.done());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_token_falls_back_to_the_next_model() {
    let slow = standin(&[("big-llm", 4096)]).await;
    slow.set_behaviour(behaviour(|b| b.ttft_ms = 3_000));
    let quick = one_standin().await;
    let extra = "[llm]\nttft_timeout_ms = 300\n[llm.fallbacks]\nbig-llm = [\"standin-llm\"]\n";
    let server = serve(&[&slow, &quick], extra);
    let started = Instant::now();
    let mut body = streamed(3);
    body["model"] = json!("big-llm");
    let stream = sse(&server, "/v1/chat/completions", &body).await;
    assert_eq!(stream.status, 200);
    assert!(stream.done());
    assert_eq!(stream.text(), "tok0 tok1 tok2 ");
    assert_eq!(stream.chunks()[0]["model"], MODEL, "the fallback answered");
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );

    // Without a fallback, the caller hears why, as a 504 (the first chunk's deadline).
    let server = serve(&[&slow], "[llm]\nttft_timeout_ms = 300\n");
    let stream = sse(&server, "/v1/chat/completions", &body).await;
    assert_eq!(stream.status, 504, "{:?}", stream.events);
    let message = stream.events[0].0["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("ttft_timeout_ms"), "{message}");
}
