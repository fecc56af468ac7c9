//! Rate limits per principal, shared by two `citadel serve` processes through Redis: exactly
//! the limit gets through, then 429 with OpenAI's headers; tokens counted from real usage.

use std::time::Duration;

use crate::{
    bearer, common, embed,
    keys::{KEYS_ONLY, create},
};

fn shared(prefix: &str) -> String {
    format!(
        "{KEYS_ONLY}[cache]\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"\n"
    )
}

fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("citadel-test-{name}-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_requests_per_minute_means_ten_across_two_servers() {
    let database = common::sqlite_url();
    let env = [("CITADEL_DATABASE__URL", database.as_str())];
    let config = shared(&unique_prefix("rpm"));
    let one = common::Server::with_env(&config, &env);
    let two = common::Server::with_env(&config, &env);
    let key = create(
        &database,
        &["--name", "batch", "--role", "member", "--rpm", "10"],
    );
    let auth = bearer(&key);

    let mut passed = 0;
    let mut refused = Vec::new();
    for i in 0..16 {
        let server = if i % 2 == 0 { &one } else { &two };
        let (status, headers, body) = embed(server, Some(&auth), common::MODEL).await;
        match status {
            200 => {
                passed += 1;
                assert_eq!(headers["x-ratelimit-limit-requests"], "10");
                let remaining: u64 = headers["x-ratelimit-remaining-requests"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(remaining, 10 - passed, "remaining after {passed}");
                assert!(headers.contains_key("x-ratelimit-reset-requests"));
            }
            429 => refused.push((headers, body)),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(passed, 10, "exactly the limit gets through");
    assert_eq!(refused.len(), 6);
    let (headers, body) = &refused[0];
    let error = common::assert_openai_error(429, body, 429);
    assert_eq!(error["code"], "rate_limit_exceeded");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=7).contains(&retry), "retry-after {retry}");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    assert!(
        one.logs().contains("\"reason\":\"rate_limited\"")
            || two.logs().contains("\"reason\":\"rate_limited\"")
    );
    let mut counted = false;
    for server in [&one, &two] {
        let metrics = common::http()
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap();
        counted |= metrics
            .text()
            .await
            .unwrap()
            .contains("citadel_ratelimit_rejections_total");
    }
    assert!(
        counted,
        "citadel_ratelimit_rejections_total on neither server"
    );
    // /health/detailed says where limits are counted.
    let health = common::http()
        .get(one.url("/health/detailed"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(
        health["components"]["auth"]["rate_limits"]["store"], "redis",
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_are_counted_from_real_usage() {
    let database = common::sqlite_url();
    let env = [("CITADEL_DATABASE__URL", database.as_str())];
    let server = common::Server::with_env(&shared(&unique_prefix("tpm")), &env);
    let key = create(
        &database,
        &["--name", "tokens", "--role", "member", "--tpm", "20"],
    );
    let auth = bearer(&key);
    let long = "the quick brown fox jumps over the lazy dog ".repeat(4);
    let response = common::http()
        .post(server.url("/v1/embeddings"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"model": common::MODEL, "input": long}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ratelimit-limit-tokens"], "20");
    assert_eq!(response.headers()["x-ratelimit-remaining-tokens"], "20");
    let body: serde_json::Value = response.json().await.unwrap();
    let used = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        used > 20,
        "the input is more than the minute's tokens: {used}"
    );
    // The debit lands in Redis just after the answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, headers, body) = embed(&server, Some(&auth), common::MODEL).await;
    let error = common::assert_openai_error(status, &body, 429);
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(headers["x-ratelimit-remaining-tokens"], "0");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    // `used` tokens at 20 a minute: the debt drains for (used - 20) * 3 s at least.
    assert!(
        retry >= (used - 20) * 3,
        "retry-after {retry} for {used} tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_s_tokens_are_debited_when_it_ends() {
    use citadel_standin::llm::{LlmStandIn, LlmStandInConfig};
    let vllm = LlmStandIn::start(LlmStandInConfig::default())
        .await
        .unwrap();
    let database = common::sqlite_url();
    let config = format!(
        "{KEYS_ONLY}[[llm.servers]]\nname = \"llm-0\"\nurl = \"{}\"\n",
        vllm.url()
    );
    let server = common::Server::with_env(&config, &[("CITADEL_DATABASE__URL", database.as_str())]);
    let key = create(
        &database,
        &["--name", "chat", "--role", "member", "--tpm", "10"],
    );
    let chat = |stream: bool| {
        common::http()
            .post(server.url("/v1/chat/completions"))
            .header("authorization", bearer(&key))
            .json(
                &serde_json::json!({"model": "standin-llm", "stream": stream, "max_tokens": 12,
                "messages": [{"role": "user", "content": "hello there"}]}),
            )
            .send()
    };
    // The stream is admitted (the budget is whole) and runs to its end: 2 + 12 tokens.
    let streamed = chat(true).await.unwrap();
    assert_eq!(streamed.status(), 200);
    let text = streamed.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = chat(false).await.unwrap();
    assert_eq!(refused.status(), 429, "the stream's usage was not counted");
    assert_eq!(refused.headers()["x-ratelimit-remaining-tokens"], "0");
}
