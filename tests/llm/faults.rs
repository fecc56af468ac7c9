//! Servers failing: retries before the first chunk, a full fleet passed on as 429 with
//! Retry-After, and a server killed under load losing no request that had not yet streamed.

use std::{sync::Arc, time::Duration};

use serde_json::json;

use super::*;
use crate::common::assert_openai_error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_before_the_first_chunk_are_retried_then_passed_on() {
    let vllm = one_standin().await;
    let server = serve(&[&vllm], "");
    vllm.set_behaviour(behaviour(|b| b.fail_next = vec![500, 503]));
    let (status, _, answer) = post(&server, "/v1/chat/completions", &chat_body("x")).await;
    assert_eq!(status, 200, "two 5xx then an answer: {answer}");
    assert_eq!(vllm.stats().requests, 3);

    vllm.set_behaviour(behaviour(|b| {
        b.fail_always = Some(429);
        b.retry_after = Some(7);
        b.flat_errors = true;
    }));
    let (status, headers, answer) = post(&server, "/v1/chat/completions", &chat_body("x")).await;
    let error = assert_openai_error(status, &answer, 429);
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(headers["retry-after"], "7");

    vllm.set_behaviour(behaviour(|b| b.fail_always = Some(502)));
    let mut body = chat_body("x");
    body["stream"] = json!(true);
    let stream = sse(&server, "/v1/chat/completions", &body).await;
    assert_eq!(stream.status, 503, "{:?}", stream.events);
    assert_eq!(stream.events[0].0["error"]["code"], "service_unavailable");

    // Three 502s in a row opened the breaker: let its open period pass.
    tokio::time::sleep(Duration::from_millis(600)).await;
    vllm.set_behaviour(behaviour(|b| b.malformed_after = Some(0)));
    let stream = sse(&server, "/v1/chat/completions", &body).await;
    assert_eq!(
        stream.status, 200,
        "the role chunk came first: {:?}",
        stream.events
    );
    let error = stream
        .error()
        .expect("an unusable chunk ends the stream with an error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unusable chunk"),
        "{error}"
    );
    assert!(stream.done());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_servers_loses_no_request_that_had_not_streamed() {
    let a = one_standin().await;
    let b = one_standin().await;
    for s in [&a, &b] {
        s.set_behaviour(behaviour(|b| {
            b.ttft_ms = 20;
            b.itl_ms = 10;
        }));
    }
    let server = Arc::new(serve(&[&a, &b], ""));
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 10)).await;
            let mut body = chat_body("go");
            body["stream"] = json!(true);
            body["max_tokens"] = json!(8);
            sse(&server, "/v1/chat/completions", &body).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    a.stop();
    let (mut completed, mut cut) = (0, 0);
    for task in tasks {
        let stream = task.await.unwrap();
        assert_eq!(
            stream.status, 200,
            "a request that had not streamed was lost: {:?}",
            stream.events
        );
        assert!(stream.done());
        match stream.error() {
            None => {
                assert_eq!(stream.text(), "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 ");
                completed += 1;
            }
            // Only a stream the killed server had started may end in an error, after its
            // first chunks: it cannot be replayed without sending text twice.
            Some(_) => {
                assert!(stream.chunks().len() > 1, "{:?}", stream.events);
                cut += 1;
            }
        }
    }
    assert!(completed >= 50, "completed {completed}, cut {cut}");
    assert!(b.stats().completed > 0);
}
