//! Findings 1, 4, 5, 8 and 9 (logs): oversized values, trickled bodies, workflow params, the
//! HTTP library's own refusals.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{addr, body_json, common::*, raw_exchange};

#[tokio::test]
async fn oversized_values_in_one_request_never_fail_anyone_else() {
    let server = Arc::new(Server::start());
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));

    // The normal client: small embeddings, back to back.
    let normal = {
        let (server, stop, failures, served) = (
            server.clone(),
            stop.clone(),
            failures.clone(),
            served.clone(),
        );
        tokio::spawn(async move {
            let client = http();
            while !stop.load(Ordering::Relaxed) {
                let response = client
                    .post(server.url("/v1/embeddings"))
                    .json(&json!({"model": MODEL, "input": "a normal request"}))
                    .send()
                    .await;
                match response.map(|r| r.status().as_u16()) {
                    Ok(200) => served.fetch_add(1, Ordering::Relaxed),
                    _ => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    // The attacker: every oversized shape the probe found, round after round.
    let client = http();
    let big = |n: usize| "a".repeat(n);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        for id_len in [17_000, 70_000] {
            let response = client
                .post(server.url("/v1/embeddings"))
                .header("x-request-id", big(id_len))
                .json(&json!({"model": MODEL, "input": "x"}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                200,
                "a bad request id is replaced, not fatal"
            );
            let echoed = response.headers()["x-request-id"].len();
            assert!(echoed <= 128, "echoed a {echoed}-byte request id");
        }
        let (status, _, body) =
            embed_raw(&server, &json!({"model": big(65_000), "input": "x"})).await;
        let error = assert_openai_error(status, &body, 400);
        assert_eq!(error["param"], "model");
        assert!(error["message"].as_str().unwrap().len() < 300, "{error}");
        let (status, body) = get_json(&server, &format!("/v1/models/{}", big(17_000))).await;
        assert_openai_error(status, &body, 414);
        let (status, body) = get_json(&server, &format!("/v1/models/{}", big(2_000))).await;
        let error = assert_openai_error(status, &body, 400);
        assert_eq!(error["param"], "model");
    }
    stop.store(true, Ordering::Relaxed);
    normal.await.unwrap();
    assert!(served.load(Ordering::Relaxed) > 10);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "normal requests failed beside the attacker"
    );
    let (status, _) = get_json(&server, "/health/detailed").await;
    assert_eq!(status, 200);
    // Nothing the attacker sent reaches a log line whole.
    let longest = server.logs().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
}

#[tokio::test]
async fn a_trickled_body_gets_408_at_the_total_deadline() {
    let server =
        Server::with_config("[http]\nbody_read_timeout_ms = 1500\nbody_idle_timeout_ms = 1000\n");
    let mut stream = tokio::net::TcpStream::connect(addr(&server.http))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    let started = Instant::now();
    // One byte every 300 ms: never idle for the idle limit, never done.
    let trickle = async {
        loop {
            if stream.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(2500), trickle).await;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        body_json(&answer)["error"]["code"],
        "request_timeout",
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn workflow_params_are_bounded_and_no_row_can_break_listing() {
    let server = Server::with_config(
        "[workflows]\nworker_enabled = false\nmax_params_bytes = 300000\n\
         list_page_max_bytes = 700000\n",
    );
    let client = http();
    let submit = |params: Value| {
        client
            .post(server.url("/api/v1/workflows"))
            .json(&json!({"kind": "noop", "params": params}))
            .send()
    };
    let too_big = submit(json!({"blob": "x".repeat(400_000)})).await.unwrap();
    let status = too_big.status().as_u16();
    let body: Value = too_big.json().await.unwrap();
    let error = assert_openai_error(status, &body, 400);
    assert_eq!(error["param"], "params", "{error}");

    // Six rows just under the limit: more than one page can carry at once.
    for _ in 0..6 {
        let response = submit(json!({"blob": "x".repeat(290_000)})).await.unwrap();
        assert_eq!(response.status(), 201);
    }
    let mut seen = 0;
    let mut token = String::new();
    for _ in 0..10 {
        let path = format!("/api/v1/workflows?limit=100&page_token={token}");
        let (status, page) = get_json(&server, &path).await;
        assert_eq!(status, 200, "{page}");
        let rows = page["data"].as_array().unwrap().len();
        assert!((1..=3).contains(&rows), "a page of {rows} rows");
        seen += rows;
        match page["next_page_token"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_string(),
            _ => break,
        }
    }
    assert_eq!(seen, 6, "every workflow is listed, a few per page");
}

#[tokio::test]
async fn the_http_librarys_own_refusals_speak_openai_errors() {
    let server = Server::start();
    let wait = Duration::from_secs(3);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GET /health HT\x01TP/1.1\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab"
                .to_vec(),
            "HTTP/1.1 400",
        ),
        (
            [
                b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec(),
                vec![b'a'; 1_000_000],
                b"\r\n\r\n".to_vec(),
            ]
            .concat(),
            "HTTP/1.1 431",
        ),
        (
            [
                b"GET /health HTTP/1.1\r\nHost: x\r\n".to_vec(),
                (0..200).flat_map(|i| format!("X-{i}: a\r\n").into_bytes()).collect(),
                b"\r\n".to_vec(),
            ]
            .concat(),
            "HTTP/1.1 431",
        ),
    ];
    for (request, expected) in cases {
        let answer = raw_exchange(&server.http, &request, wait).await;
        assert!(answer.starts_with(expected), "{answer}");
        let body = body_json(&answer);
        assert!(body["error"]["message"].is_string(), "{answer}");
    }
    // A declared body over the limit: 413 at once, never `100 Continue` and a wait.
    let request = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Expect: 100-continue\r\nContent-Length: 999999999\r\n\r\n";
    let started = Instant::now();
    let answer = raw_exchange(&server.http, request, Duration::from_millis(1500)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(1) || answer.contains("413"));
    assert!(
        body_json(&answer)["error"]["message"].is_string(),
        "{answer}"
    );
}

#[tokio::test]
async fn expected_refusals_are_not_logged_as_errors() {
    let models = upstream::model_section("remote", "openai", &[(&upstream::dead_url(), 1)], "");
    let server = upstream::serve(&models, 0, 1);
    let (status, _) = upstream::embed(&server, "remote", &["x".to_string()]).await;
    assert_eq!(status, 503, "an unreachable upstream is a 503");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs();
    let errors: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(errors.is_empty(), "503 logged at ERROR: {errors:?}");
}
