//! Remote models over real sockets: load balancing, failover, retries, the circuit breaker,
//! deadlines, backpressure, chunking and bad upstream answers, against stand-in servers that
//! speak Ollama's and OpenAI's wire formats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use citadel_standin::Behaviour;
use common::{upstream::*, *};
use futures_util::future::join_all;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_across_two_weighted_endpoints() {
    let (a, b) = (standin().await, standin().await);
    let model = model_section("fleet", "ollama", &[(&a.url(), 1), (&b.url(), 3)], "");
    let server = serve(&model, 0, 3);

    let inputs = texts(400);
    let answers = join_all(inputs.chunks(1).map(|one| embed(&server, "fleet", one))).await;
    for ((status, body), text) in answers.iter().zip(&inputs) {
        assert_eq!(*status, 200, "{body}");
        assert_close(&float_vectors(body)[0], &expected(text));
    }
    let (na, nb) = (a.stats().requests, b.stats().requests);
    assert_eq!(na + nb, 400);
    // Weights 1:3 with power-of-two-choices: both serve, the heavier one clearly more.
    assert!(na >= 30 && nb > na, "a served {na}, b served {nb}");

    let (_, models) = get_json(&server, "/v1/models").await;
    let fleet = &models["data"][0];
    assert_eq!(
        (fleet["id"].as_str(), fleet["backend"].as_str()),
        (Some("fleet"), Some("ollama"))
    );
    assert_eq!(fleet["state"], "ready");
    let health = model_health(&server, "fleet").await;
    assert_eq!(health["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(health["endpoints"][1]["weight"], 3);
    assert_eq!(health["endpoints"][0]["breaker"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_endpoint_mid_load_loses_no_request() {
    let (a, b) = (standin().await, standin().await);
    for s in [&a, &b] {
        s.set_behaviour(Behaviour {
            latency_ms: 5,
            ..Behaviour::default()
        });
    }
    let model = model_section("fleet", "openai", &[(&a.url(), 1), (&b.url(), 1)], "");
    let server = serve(&model, 100, 3);

    let load = (0..8).map(|worker| {
        let server = &server;
        async move {
            let mut statuses = Vec::new();
            let until = Instant::now() + Duration::from_millis(1500);
            let mut i = 0;
            while Instant::now() < until {
                let one = [sentence(worker * 10_000 + i, 6)];
                let (status, body) = embed(server, "fleet", &one).await;
                assert_eq!(status, 200, "request failed during failover: {body}");
                assert_close(&float_vectors(&body)[0], &expected(&one[0]));
                statuses.push(status);
                i += 1;
            }
            statuses.len()
        }
    });
    let killer = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        a.stop();
    };
    let (served, ()) = tokio::join!(join_all(load), killer);
    let total: usize = served.iter().sum();
    assert!(total > 100, "only {total} requests ran");

    // The probes keep failing on the dead endpoint: its breaker is open and says so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = model_health(&server, "fleet").await;
    assert_eq!(
        health["state"], "ready",
        "one endpoint still serves: {health}"
    );
    assert_eq!(health["endpoints"][0]["breaker"], "open", "{health}");
    assert_eq!(health["endpoints"][1]["breaker"], "closed", "{health}");
    let metrics = http().get(server.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let dead = format!("endpoint=\"{}\"", a.url());
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("citadel_upstream_breaker_state") && l.contains(&dead))
        .unwrap_or_else(|| panic!("no breaker gauge for {dead} in:\n{metrics}"));
    assert!(gauge.ends_with(" 2"), "open breaker reads 2: {gauge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_fails_fast_and_recovers() {
    let a = standin().await;
    a.set_behaviour(Behaviour {
        fail_always: Some(503),
        ..Behaviour::default()
    });
    let model = model_section("solo", "ollama", &[(&a.url(), 1)], "");
    let server = serve(&model, 100, 2);
    let one = texts(1);

    let (status, body) = embed(&server, "solo", &one).await;
    let error = assert_openai_error(status, &body, 503);
    assert!(error["message"].as_str().unwrap().contains("503"), "{body}");
    // Probes and requests push it past the threshold: the model is unavailable...
    tokio::time::sleep(Duration::from_millis(400)).await;
    let health = model_health(&server, "solo").await;
    assert_eq!(health["state"], "unavailable", "{health}");
    assert_ne!(health["endpoints"][0]["breaker"], "closed", "{health}");
    let (_, overall) = get_json(&server, "/health/detailed").await;
    assert_eq!(overall["status"], "degraded");
    // ...and its health service says NOT_SERVING while the process stays SERVING.
    assert_eq!(
        grpc_health(&server, "citadel.v1.EmbeddingService/solo").await,
        2
    );
    assert_eq!(grpc_health(&server, "").await, 1);
    // Open means fast: refused without a call upstream, with when to come back.
    let started = Instant::now();
    let (status, headers, body) = embed_raw(&server, &json!({"model": "solo", "input": one})).await;
    let error = assert_openai_error(status, &body, 503);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("circuit breakers open"), "{message}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );

    // The server comes back: the next probe closes the breaker.
    a.set_behaviour(Behaviour::default());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let health = model_health(&server, "solo").await;
    assert_eq!(health["state"], "ready", "{health}");
    assert_eq!(health["endpoints"][0]["breaker"], "closed");
    assert_eq!(
        grpc_health(&server, "citadel.v1.EmbeddingService/solo").await,
        1
    );
    let (status, _) = embed(&server, "solo", &one).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_then_succeeds_honouring_retry_after() {
    let a = standin().await;
    let model = model_section("solo", "openai", &[(&a.url(), 1)], "");
    let server = serve(&model, 0, 3);
    let one = texts(1);

    a.set_behaviour(Behaviour {
        fail_next: vec![503, 502],
        ..Behaviour::default()
    });
    let (status, body) = embed(&server, "solo", &one).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.stats().requests, 3, "two failures, then the answer");

    a.set_behaviour(Behaviour {
        fail_next: vec![429],
        retry_after: Some(1),
        ..Behaviour::default()
    });
    let started = Instant::now();
    let (status, _) = embed(&server, "solo", &one).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );

    // A server asking for more patience than the caller's deadline (300 s) allows: passed on,
    // not waited out.
    a.set_behaviour(Behaviour {
        fail_next: vec![503],
        retry_after: Some(3600),
        ..Behaviour::default()
    });
    let started = Instant::now();
    let (status, headers, body) = embed_raw(&server, &json!({"model": "solo", "input": one})).await;
    assert_openai_error(status, &body, 503);
    assert_eq!(headers["retry-after"], "3600");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Attempts run out: the caller gets 503 naming the upstream's answer.
    a.set_behaviour(Behaviour {
        fail_next: vec![500, 500, 500],
        ..Behaviour::default()
    });
    let (status, body) = embed(&server, "solo", &one).await;
    let error = assert_openai_error(status, &body, 503);
    assert!(
        error["message"].as_str().unwrap().contains(&a.url()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_meets_the_callers_deadline() {
    let a = standin().await;
    a.set_behaviour(Behaviour {
        hang: true,
        ..Behaviour::default()
    });
    let model = model_section("solo", "ollama", &[(&a.url(), 1)], "");
    let config = format!("{model}\n[http]\nrequest_timeout_ms = 400\n");
    let server = serve(&config, 0, 3);

    for _ in 0..4 {
        let started = Instant::now();
        let (status, body) = embed(&server, "solo", &texts(1)).await;
        assert_openai_error(status, &body, 504);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
    // Time-outs cut short by the caller's deadline say nothing about the endpoint.
    let health = model_health(&server, "solo").await;
    assert_eq!(health["endpoints"][0]["breaker"], "closed", "{health}");
    assert_eq!(
        health["endpoints"][0]["consecutive_failures"], 0,
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_429_for_one_input_or_many() {
    let a = standin().await;
    a.set_behaviour(Behaviour {
        latency_ms: 1500,
        ..Behaviour::default()
    });
    let model = model_section("solo", "ollama", &[(&a.url(), 1)], "max_queued_inputs = 4");
    let server = serve(&model, 0, 3);

    let four = texts(4);
    let busy = embed(&server, "solo", &four);
    let refused = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let one = embed_raw(&server, &json!({"model": "solo", "input": "x"})).await;
        let two = embed(&server, "solo", &texts(2)).await;
        (one, two)
    };
    let ((status, _), ((one, headers, body), (two, body2))) = tokio::join!(busy, refused);
    assert_eq!(status, 200);
    assert_openai_error(one, &body, 429);
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert_openai_error(two, &body2, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2048_input_request_is_chunked_and_reassembled_in_order() {
    let a = standin().await;
    let extra = "batch_size = 32\nchunk_concurrency = 4";
    let model = model_section("solo", "openai", &[(&a.url(), 1)], extra);
    let server = serve(&model, 0, 3);

    let inputs = texts(2048);
    let (status, body) = embed(&server, "solo", &inputs).await;
    assert_eq!(status, 200, "{}", body["error"]);
    let vectors = float_vectors(&body);
    assert_eq!(vectors.len(), 2048);
    for (got, text) in vectors.iter().zip(&inputs) {
        assert_close(got, &expected(text));
    }
    let stats = a.stats();
    assert_eq!((stats.requests, stats.largest_batch), (64, 32));
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() >= 2048);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_upstream_answers_are_a_clear_502() {
    let a = standin().await;
    let models = format!(
        "{}{}",
        model_section("solo", "openai", &[(&a.url(), 1)], ""),
        model_section(
            "missing",
            "ollama",
            &[(&a.url(), 1)],
            "upstream_model = \"nope\""
        ),
    );
    // A breaker that stays closed, so each case meets the upstream rather than an open breaker.
    let server = serve_with_threshold(&models, 0, 2, 100);
    let one = texts(1);

    let cases = [
        (
            Behaviour {
                wrong_dimensions: true,
                ..Behaviour::default()
            },
            "383 dimensions",
        ),
        (
            Behaviour {
                malformed: true,
                ..Behaviour::default()
            },
            "malformed JSON",
        ),
        (
            Behaviour {
                base64: true,
                ..Behaviour::default()
            },
            "",
        ),
    ];
    for (behaviour, says) in cases {
        a.set_behaviour(behaviour.clone());
        let (status, body) = embed(&server, "solo", &one).await;
        if says.is_empty() {
            // Floats were asked for; base64 is tolerated.
            assert_eq!(status, 200, "{body}");
            assert_close(&float_vectors(&body)[0], &expected(&one[0]));
            continue;
        }
        let error = assert_openai_error(status, &body, 502);
        assert_eq!(error["code"], "upstream_error");
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{behaviour:?}: {body}"
        );
    }
    a.set_behaviour(Behaviour::default());
    let (status, body) = embed(&server, "missing", &one).await;
    let error = assert_openai_error(status, &body, 502);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("try pulling it"),
        "{body}"
    );

    a.set_behaviour(Behaviour {
        reset: true,
        ..Behaviour::default()
    });
    let (status, body) = embed(&server, "solo", &one).await;
    assert_openai_error(status, &body, 503);
}

/// 1 = SERVING, 2 = NOT_SERVING (grpc.health.v1).
async fn grpc_health(server: &Server, service: &str) -> i32 {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(server.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    client.check(request).await.unwrap().into_inner().status
}
