//! The Ollama-compatible routes (`/api/embed`, `/api/embeddings`, `/api/tags`, `/api/version`)
//! over real sockets: Ollama's wire format, the same vectors as `/v1/embeddings`, and Ollama's
//! `{"error": "..."}` body with the statuses the OpenAI routes use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

/// POSTs JSON to `path`; returns the status and the parsed body (null if not JSON).
async fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let response = http()
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn floats(value: &Value) -> Vec<f32> {
    let values = value.as_array().expect("float array");
    values
        .iter()
        .map(|x| x.as_f64().expect("f") as f32)
        .collect()
}

/// Asserts Ollama's error body, exactly `{"error": "<non-empty>"}`, with the given status.
fn assert_ollama_error(status: u16, body: &Value, expected: u16) -> String {
    assert_eq!(status, expected, "status for body {body}");
    let object = body.as_object().expect("a JSON object");
    assert_eq!(object.len(), 1, "only the error key in {body}");
    let message = object["error"].as_str().expect("error string");
    assert!(!message.is_empty(), "message in {body}");
    message.to_string()
}

#[tokio::test]
async fn embed_matches_v1_embeddings_in_order_single_and_batch() {
    let server = Server::start();
    let texts: Vec<String> = (0..12).map(|i| sentence(i, 3 + (i * 7) % 30)).collect();
    let (_, _, openai) = embed_raw(&server, &json!({"model": MODEL, "input": texts})).await;
    let want = float_vectors(&openai);

    let (status, body) = post(
        &server,
        "/api/embed",
        &json!({"model": MODEL, "input": texts}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], MODEL);
    let got: Vec<Vec<f32>> = body["embeddings"]
        .as_array()
        .expect("embeddings")
        .iter()
        .map(floats)
        .collect();
    assert_eq!(got.len(), texts.len());
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(got.len(), 384);
        assert!(
            (norm(got) - 1.0).abs() < 1e-4,
            "L2-normalised, as Ollama's /api/embed"
        );
        let max_diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            max_diff < 1e-5,
            "input {i}: differs from /v1/embeddings by {max_diff}"
        );
    }
    assert_eq!(body["prompt_eval_count"], openai["usage"]["prompt_tokens"]);
    assert!(
        body["total_duration"].as_u64().is_some_and(|ns| ns > 0),
        "{body}"
    );
    assert_eq!(body["load_duration"], 0);

    // One string is one vector; keep_alive and options are accepted and ignored.
    let request =
        json!({"model": MODEL, "input": texts[3], "keep_alive": "5m", "options": {"num_ctx": 512}});
    let (status, body) = post(&server, "/api/embed", &request).await;
    assert_eq!(status, 200, "{body}");
    let single = floats(&body["embeddings"][0]);
    assert_eq!(body["embeddings"].as_array().map(Vec::len), Some(1));
    assert!(cosine(&single, &want[3]) > 0.99999);

    // Dimensions are cut and re-normalised; dimensions 0 (Go's zero value) means all of them.
    let request = json!({"model": MODEL, "input": texts[0], "dimensions": 64, "truncate": true});
    let (status, body) = post(&server, "/api/embed", &request).await;
    assert_eq!(status, 200, "{body}");
    let short = floats(&body["embeddings"][0]);
    assert_eq!(short.len(), 64);
    assert!((norm(&short) - 1.0).abs() < 1e-4);
    let request = json!({"model": MODEL, "input": texts[0], "dimensions": 0});
    let (_, body) = post(&server, "/api/embed", &request).await;
    assert_eq!(floats(&body["embeddings"][0]).len(), 384);

    // The name comes back as the caller wrote it, as Ollama does.
    let alias = "sentence-transformers/all-MiniLM-L6-v2";
    let (status, body) = post(
        &server,
        "/api/embed",
        &json!({"model": alias, "input": "x y"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], alias);
}

#[tokio::test]
async fn legacy_embeddings_tags_and_version() {
    let server = Server::start();
    let text = "Citadel routes embeddings for the fleet.";
    let (_, _, raw) = embed_raw(
        &server,
        &json!({"model": MODEL, "input": text, "normalize": false}),
    )
    .await;
    let raw = float_vectors(&raw).remove(0);

    // Ollama's legacy endpoint returns the unnormalised vector.
    let request = json!({"model": MODEL, "prompt": text, "options": {}, "keep_alive": 0});
    let (status, body) = post(&server, "/api/embeddings", &request).await;
    assert_eq!(status, 200, "{body}");
    let object = body.as_object().expect("object");
    assert_eq!(object.keys().collect::<Vec<_>>(), ["embedding"]);
    let legacy = floats(&body["embedding"]);
    assert_eq!(legacy.len(), 384);
    assert!((norm(&legacy) - 1.0).abs() > 0.01, "not normalised");
    assert!(cosine(&legacy, &raw) > 0.99999);

    let (status, body) = get_json(&server, "/api/tags").await;
    assert_eq!(status, 200, "{body}");
    let models = body["models"].as_array().expect("models");
    let minilm = models
        .iter()
        .find(|m| m["name"] == MODEL)
        .expect("all-minilm listed");
    assert_eq!(minilm["model"], MODEL);
    assert_eq!(minilm["size"], 0);
    let digest = minilm["digest"].as_str().expect("digest");
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{digest}"
    );
    let modified = minilm["modified_at"].as_str().expect("modified_at");
    let shape = modified.len() == 20 && modified.ends_with('Z') && modified.as_bytes()[10] == b'T';
    assert!(
        shape && modified > "2020-01-01",
        "RFC 3339, recent: {modified}"
    );
    let details = &minilm["details"];
    assert_eq!(details["format"], "onnx");
    assert_eq!(details["families"], Value::Null);
    assert_eq!(details["embedding_length"], 384);
    for key in [
        "parent_model",
        "family",
        "parameter_size",
        "quantization_level",
    ] {
        assert_eq!(details[key], "", "{key}");
    }
    let names: Vec<&str> = models.iter().filter_map(|m| m["name"].as_str()).collect();
    let (_, openai) = get_json(&server, "/v1/models").await;
    let ids: Vec<&str> = openai["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(names, ids, "the same models as /v1/models");

    let (status, body) = get_json(&server, "/api/version").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"version": env!("CARGO_PKG_VERSION")}));
}

#[tokio::test]
async fn errors_use_ollamas_body_and_the_openai_statuses() {
    let server = Server::start();
    let long = "word ".repeat(400);
    let cases: Vec<(&str, Value, u16)> = vec![
        (
            "/api/embed",
            json!({"model": "no-such-model", "input": "x"}),
            404,
        ),
        ("/api/embed", json!({"input": "x"}), 400),
        ("/api/embed", json!({"model": "", "input": "x"}), 400),
        ("/api/embed", json!({"model": MODEL, "input": []}), 400),
        ("/api/embed", json!({"model": MODEL}), 400),
        ("/api/embed", json!({"model": MODEL, "input": ""}), 400),
        (
            "/api/embed",
            json!({"model": MODEL, "input": ["ok", 7]}),
            400,
        ),
        ("/api/embed", json!({"model": MODEL, "input": 42}), 400),
        (
            "/api/embed",
            json!({"model": MODEL, "input": "x", "dimensions": -3}),
            400,
        ),
        (
            "/api/embed",
            json!({"model": MODEL, "input": "x", "dimensions": 385}),
            400,
        ),
        (
            "/api/embed",
            json!({"model": MODEL, "input": "x", "dimensions": "many"}),
            400,
        ),
        (
            "/api/embed",
            json!({"model": MODEL, "input": long, "truncate": false}),
            400,
        ),
        (
            "/api/embeddings",
            json!({"model": "no-such-model", "prompt": "x"}),
            404,
        ),
        ("/api/embeddings", json!({"prompt": "x"}), 400),
        ("/api/embeddings", json!({"model": MODEL}), 400),
    ];
    for (path, body, expected) in cases {
        let (status, answer) = post(&server, path, &body).await;
        let message = assert_ollama_error(status, &answer, expected);
        if expected == 404 {
            assert!(
                message.contains("no-such-model"),
                "Citadel's message: {message}"
            );
        }
    }

    let client = http();
    for (body, content_type, expected) in [
        (
            "{\"model\": \"all-minilm\", \"input\": [",
            "application/json",
            400,
        ),
        ("model=all-minilm", "application/x-www-form-urlencoded", 415),
    ] {
        let response = client
            .post(server.url("/api/embed"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        assert_ollama_error(status, &response.json().await.expect("json"), expected);
    }
}
