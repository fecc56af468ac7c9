//! Vectors (issue 13) over real sockets: collections, points and search by text through the
//! REST edge and `citadel.v1.VectorService`, ingestion as a `vector_ingest` workflow, on the
//! embedded store (`embedded.rs`: 1,000 documents, a SIGKILL in the middle, recall@1 on the
//! labelled set in `tests/fixtures/vectors`, filters, deletes, restarts) and on Qdrant's own
//! gRPC protocol through the production `qdrant-client` code against the stand-in Qdrant
//! (`qdrant.rs`); bad input on both (`bad_input.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod embedded;
mod qdrant;

use std::{path::Path, time::Duration};

use common::{Server, http};
use serde_json::{Value, json};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vectors");

/// Sends `body` (JSON, or nothing) with `method` to `path`; the status and JSON answer.
pub async fn call(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http().request(method, server.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn create(server: &Server, name: &str) -> Value {
    let body = json!({"name": name, "model": "all-minilm"});
    let (status, created) = call(server, "POST", "/api/v1/collections", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

pub async fn search(server: &Server, collection: &str, body: Value) -> Vec<Value> {
    let path = format!("/api/v1/collections/{collection}/search");
    let (status, found) = call(server, "POST", &path, Some(body)).await;
    assert_eq!(status, 200, "{found}");
    found["data"].as_array().unwrap().clone()
}

pub async fn points_count(server: &Server, collection: &str) -> u64 {
    let (status, c) = call(
        server,
        "GET",
        &format!("/api/v1/collections/{collection}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{c}");
    c["points_count"].as_u64().unwrap()
}

/// The labelled documents and their queries (`query`, `expect`).
pub fn labelled() -> (Vec<Value>, Vec<(String, String)>) {
    let read = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(Path::new(FIXTURES).join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let queries = read("queries.jsonl")
        .into_iter()
        .map(|q| {
            let text = q["query"].as_str().unwrap().to_string();
            (text, q["expect"].as_str().unwrap().to_string())
        })
        .collect();
    (read("labelled.jsonl"), queries)
}

/// The labelled documents and `filler` more, as JSONL in `dir/name`.
pub fn corpus(dir: &Path, name: &str, filler: usize) -> usize {
    let (docs, _) = labelled();
    let mut lines: Vec<String> = docs.iter().map(Value::to_string).collect();
    for i in 0..filler {
        let doc = json!({"id": format!("filler-{i}"), "text": common::sentence(i, 14),
            "payload": {"group": "filler", "n": 1000 + i}});
        lines.push(doc.to_string());
    }
    std::fs::write(dir.join(name), lines.join("\n") + "\n").unwrap();
    lines.len()
}

pub async fn submit(server: &Server, params: Value) -> String {
    let body = json!({"kind": "vector_ingest", "params": params});
    let (status, created) = call(server, "POST", "/api/v1/workflows", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_string()
}

pub async fn workflow(server: &Server, id: &str) -> Value {
    let (status, w) = call(server, "GET", &format!("/api/v1/workflows/{id}"), None).await;
    assert_eq!(status, 200, "{w}");
    w
}

/// Polls until `done(workflow)` holds; returns the workflow.
pub async fn wait_for(server: &Server, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let w = workflow(server, id).await;
        if done(&w) {
            return w;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workflow not there in time: {w}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn finished(w: &Value) -> bool {
    matches!(
        w["state"].as_str(),
        Some("SUCCESS" | "FAILURE" | "CANCELLED")
    )
}

/// recall@1 of `queries` on `collection`, over REST.
pub async fn recall_at_1(server: &Server, collection: &str, queries: &[(String, String)]) -> f64 {
    let mut hits = 0;
    for (query, expect) in queries {
        let found = search(server, collection, json!({"query": query, "top_k": 1})).await;
        if found.first().and_then(|h| h["document_id"].as_str()) == Some(expect.as_str()) {
            hits += 1;
        } else {
            eprintln!("miss: {query:?} wanted {expect}, got {:?}", found.first());
        }
    }
    f64::from(hits) / queries.len() as f64
}
