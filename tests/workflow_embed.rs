//! The embedding task kinds end to end: `embed_batch` (inline texts, a JSONL file in and out)
//! and `cache_warm`, run by `serve`'s worker through its own EmbeddingService on the real
//! in-process model, checked against `/v1/embeddings` on the same server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{MODEL, Server, cosine, http, sentence};
use serde_json::{Value, json};

/// A server whose worker embeds 2 texts per call and reads/writes files under `dir`.
fn serve(dir: &std::path::Path) -> Server {
    let dir = dir.to_str().unwrap();
    Server::with_env(
        "",
        &[
            ("CITADEL_WORKFLOWS__EMBED_CHUNK_SIZE", "2"),
            ("CITADEL_WORKFLOWS__FILES_DIR", dir),
            ("CITADEL_WORKFLOWS__POLL_INTERVAL_MS", "100"),
        ],
    )
}

fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "citadel-wf-files-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn submit(server: &Server, body: Value) -> String {
    let response = http()
        .post(server.url("/api/v1/workflows"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let created: Value = response.json().await.unwrap();
    created["id"].as_str().unwrap().to_string()
}

/// Polls until the workflow has finished; returns it.
async fn finished(server: &Server, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let url = server.url(&format!("/api/v1/workflows/{id}"));
        let w: Value = http().get(url).send().await.unwrap().json().await.unwrap();
        if ["SUCCESS", "FAILURE", "CANCELLED"].contains(&w["state"].as_str().unwrap()) {
            return w;
        }
        assert!(std::time::Instant::now() < deadline, "not finished: {w}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn embed_directly(server: &Server, texts: &[String]) -> Vec<Vec<f32>> {
    let body = json!({"model": MODEL, "input": texts});
    let response = http()
        .post(server.url("/v1/embeddings"))
        .header("cache-control", "no-store")
        .json(&body)
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| vector(&d["embedding"]))
        .collect()
}

fn vector(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn embed_batch_returns_the_same_vectors_as_the_embeddings_api() {
    let dir = scratch_dir();
    let server = serve(&dir);
    let texts: Vec<String> = (0..5).map(|i| sentence(i, 8)).collect();
    let id = submit(
        &server,
        json!({"kind": "embed_batch",
        "params": {"model": MODEL, "texts": texts}}),
    )
    .await;
    let w = finished(&server, &id).await;
    assert_eq!(w["state"], "SUCCESS", "{w}");
    let result = &w["result"];
    assert_eq!(result["count"], 5);
    assert_eq!(result["dimensions"], 384);
    assert!(result["prompt_tokens"].as_u64().unwrap() > 0);
    // Progress counted per chunk of 2: 2, 4, 5 of 5.
    assert_eq!(w["progress"]["done"], 5);
    assert_eq!(w["progress"]["total"], 5);
    let expected = embed_directly(&server, &texts).await;
    let got: Vec<Vec<f32>> = result["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(vector)
        .collect();
    assert_eq!(got.len(), 5);
    for (g, e) in got.iter().zip(&expected) {
        assert!(cosine(g, e) > 0.9999, "{}", cosine(g, e));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn embed_batch_reads_and_writes_jsonl_files_in_files_dir() {
    let dir = scratch_dir();
    let records: Vec<Value> = (0..7)
        .map(|i| json!({"id": format!("doc-{i}"), "body": sentence(i + 100, 6)}))
        .collect();
    let jsonl: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("in/corpus.jsonl"), jsonl).unwrap();
    let server = serve(&dir);
    let id = submit(
        &server,
        json!({"kind": "embed_batch", "params": {
        "model": MODEL, "input_file": "in/corpus.jsonl", "text_field": "body",
        "output_file": "out/vectors.jsonl"}}),
    )
    .await;
    let w = finished(&server, &id).await;
    assert_eq!(w["state"], "SUCCESS", "{w}");
    assert_eq!(w["result"]["output_file"], "out/vectors.jsonl");
    assert!(w["result"].get("embeddings").is_none());
    let written = std::fs::read_to_string(dir.join("out/vectors.jsonl")).unwrap();
    let lines: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    let texts: Vec<String> = records
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_string())
        .collect();
    let expected = embed_directly(&server, &texts).await;
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], i);
        assert_eq!(line["id"], format!("doc-{i}"));
        assert!(cosine(&vector(&line["embedding"]), &expected[i]) > 0.9999);
    }
    // No partial file is left beside the output.
    let leftovers = std::fs::read_dir(dir.join("out")).unwrap().count();
    assert_eq!(leftovers, 1);

    // A missing input file is a permanent failure: one attempt, a message naming the file.
    let id = submit(
        &server,
        json!({"kind": "embed_batch", "params": {
        "model": MODEL, "input_file": "in/missing.jsonl"}}),
    )
    .await;
    let w = finished(&server, &id).await;
    assert_eq!(w["state"], "FAILURE", "{w}");
    assert_eq!(w["attempts"], 1);
    assert!(
        w["error"].as_str().unwrap().contains("missing.jsonl"),
        "{w}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_model_fails_at_once_without_retries() {
    let dir = scratch_dir();
    let server = serve(&dir);
    let id = submit(
        &server,
        json!({"kind": "embed_batch",
        "params": {"model": "no-such-model", "texts": ["a"]},
        "retry": {"max_attempts": 5}}),
    )
    .await;
    let w = finished(&server, &id).await;
    assert_eq!(w["state"], "FAILURE", "{w}");
    assert_eq!(w["attempts"], 1, "NOT_FOUND is not retried: {w}");
    assert!(
        w["error"].as_str().unwrap().contains("no-such-model"),
        "{w}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_warm_makes_later_requests_hit_the_cache() {
    let dir = scratch_dir();
    let server = serve(&dir);
    let texts: Vec<String> = (0..3).map(|i| sentence(i + 500, 9)).collect();
    let id = submit(
        &server,
        json!({"kind": "cache_warm",
        "params": {"model": MODEL, "texts": texts}}),
    )
    .await;
    let w = finished(&server, &id).await;
    assert_eq!(w["state"], "SUCCESS", "{w}");
    assert_eq!(w["result"]["count"], 3);
    assert_eq!(w["result"]["cached"], 0, "nothing was cached before: {w}");
    let response = http()
        .post(server.url("/v1/embeddings"))
        .json(&json!({"model": MODEL, "input": texts}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-citadel-cache-hits"], "3");
    let _ = std::fs::remove_dir_all(dir);
}
