//! The rest of the REST edge: models, health, metrics, request ids, CORS, slow clients, drain;
//! traces across the mesh (`rest_ops/traces.rs`); SIGHUP reload (`rest_ops/reload.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "rest_ops/reload.rs"]
mod reload;
#[path = "rest_ops/traces.rs"]
mod traces;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn models_are_listed_and_found_by_id_or_alias() {
    let server = Server::start();
    let (_, list) = get_json(&server, "/v1/models").await;
    assert_eq!(list["object"], "list");
    let model = &list["data"][0];
    assert_eq!(model["id"], MODEL);
    assert_eq!(model["object"], "model");
    assert_eq!(model["dimensions"], 384);
    assert_eq!(model["state"], "ready");
    assert!(model["created"].as_i64().is_some_and(|t| t > 1_600_000_000));

    for id in [MODEL, "sentence-transformers/all-MiniLM-L6-v2"] {
        let (status, found) = get_json(&server, &format!("/v1/models/{id}")).await;
        assert_eq!(status, 200, "{id}");
        assert_eq!(found["id"], MODEL);
    }
    let (status, body) = get_json(&server, "/v1/models/gpt-9").await;
    let error = assert_openai_error(status, &body, 404);
    assert_eq!(error["code"], "model_not_found");
}

#[tokio::test]
async fn health_and_metrics_report_what_happened() {
    let server = Server::start();
    let client = http();
    for path in ["/health/", "/health"] {
        let (status, live) = get_json(&server, path).await;
        assert_eq!((status, &live["status"]), (200, &json!("ok")), "{path}");
    }

    let (status, detailed) = get_json(&server, "/health/detailed").await;
    assert_eq!(status, 200);
    assert_eq!(detailed["status"], "ok");
    assert_eq!(detailed["components"]["grpc"]["state"], "SERVING");
    assert_eq!(detailed["components"]["models"][0]["name"], MODEL);
    assert_eq!(detailed["components"]["models"][0]["state"], "ready");
    assert!(detailed["version"].is_string() && detailed["uptime_seconds"].is_u64());

    let (status, _, _) = embed_raw(
        &server,
        &json!({"model": MODEL, "input": ["one", "two", "three"]}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = embed_raw(&server, &json!({"model": "nope", "input": "x"})).await;
    assert_eq!(status, 404);

    let response = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("send");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    let text = response.text().await.expect("text");
    let has = |needle: &str| {
        text.lines()
            .any(|l| !l.starts_with('#') && l.contains(needle))
    };
    assert!(has("http_server_request_duration_seconds_bucket"), "{text}");
    assert!(has("http_route=\"/v1/embeddings\""), "route label");
    assert!(has("http_response_status_code=\"404\""), "status label");
    assert!(has("citadel_embed_batch_size_bucket"), "batch sizes");
    assert!(
        has("citadel_embed_inference_duration_seconds_bucket"),
        "inference time"
    );
    assert!(has("citadel_embed_queue_depth"), "queue depth");
    assert!(
        has("citadel_embed_requests_total") && has("outcome=\"not_found\""),
        "requests by outcome"
    );
    assert!(has("citadel_embed_inputs_total"), "inputs");
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_reach_the_mesh_logs() {
    let server = Server::start();
    let client = http();
    let body = json!({"model": MODEL, "input": "trace me"});
    let response = client
        .post(server.url("/v1/embeddings"))
        .header("x-request-id", "req-test-4242")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-request-id"], "req-test-4242");
    let response = client
        .post(server.url("/v1/embeddings"))
        .json(&body)
        .send()
        .await
        .expect("send");
    let made = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(made.len(), 36, "a UUID is generated: {made}");

    // Logs are written asynchronously; give the pump thread a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("req-test-4242"))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("\"name\":\"http\"")),
        "REST span logged:\n{logs}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"name\":\"grpc\"")),
        "gRPC span carries the id:\n{logs}"
    );
    assert!(
        lines
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "JSON lines"
    );
}

#[tokio::test]
async fn cors_allows_the_configured_origin_only() {
    let server =
        Server::with_config("[http]\ncors_allowed_origins = [\"http://agui.test:3000\"]\n");
    let client = http();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, server.url("/v1/embeddings"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-stainless-lang",
            )
            .send()
    };
    let allowed = preflight("http://agui.test:3000").await.expect("send");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://agui.test:3000"
    );
    let allowed_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap_or_default();
    assert!(
        allowed_headers.contains("x-stainless-lang"),
        "the OpenAI JS SDK's headers pass"
    );
    let denied = preflight("http://evil.test").await.expect("send");
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn a_slow_client_does_not_stall_others_and_times_out() {
    let server = Server::with_config("[http]\nbody_read_timeout_ms = 1500\n");
    let addr = server.http.trim_start_matches("http://").to_string();
    // A client that promises a body and sends half of it, then stalls.
    let mut slow = TcpStream::connect(&addr).expect("connect");
    let head = "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    slow.write_all(head.as_bytes()).expect("write");
    slow.write_all(b"{\"model\": \"all-minilm\", \"input\": [\"half")
        .expect("write");

    let started = Instant::now();
    for i in 0..10 {
        let (status, _, body) =
            embed_raw(&server, &json!({"model": MODEL, "input": sentence(i, 20)})).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "others were served while one client stalled"
    );

    // The stalled upload itself is answered 408 once the body timeout passes.
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    let mut chunk = [0u8; 4096];
    while !answer.contains("}}") {
        match slow.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.push_str(&String::from_utf8_lossy(&chunk[..n])),
        }
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("\"type\":\"invalid_request_error\""),
        "OpenAI error body: {answer}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let mut server = Server::start();
    let inputs: Vec<String> = (0..512).map(|i| sentence(i, 100)).collect();
    let url = server.url("/v1/embeddings");
    let in_flight = tokio::spawn(async move {
        let response = http()
            .post(url)
            .json(&json!({"model": MODEL, "input": inputs}))
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("json");
        (status, body)
    });
    // Let the request reach the model, then ask the server to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.sigterm();
    let (status, body) = in_flight.await.expect("join");
    assert_eq!(status, 200, "the in-flight request finished: {body}");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(512));
    let exit = server
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exited after draining");
    assert!(exit.success(), "clean exit: {exit:?}");
    assert!(server.logs().contains("citadel stopped"));
}
