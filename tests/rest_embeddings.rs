//! `POST /v1/embeddings` through the REST edge, as OpenAI clients use it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::{Engine, engine::general_purpose::STANDARD};
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn vectors_match_sentence_transformers_as_float_and_base64() {
    let server = Server::start();
    let (texts, reference) = reference();

    let (status, _, body) = embed_raw(&server, &json!({"model": MODEL, "input": texts})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], MODEL);
    let floats = float_vectors(&body);
    for (i, (got, want)) in floats.iter().zip(&reference).enumerate() {
        assert_eq!(got.len(), 384);
        let c = cosine(got, want);
        assert!(c >= 0.999, "text {i} {:?}: cosine {c}", texts[i]);
        assert!((norm(got) - 1.0).abs() < 1e-4, "normalised by default");
    }
    let tokens = body["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert!(tokens > texts.len() as u64 * 2, "tokens counted: {tokens}");
    assert_eq!(body["usage"]["total_tokens"].as_u64(), Some(tokens));

    let request = json!({"model": MODEL, "input": texts, "encoding_format": "base64"});
    let (status, _, body) = embed_raw(&server, &request).await;
    assert_eq!(status, 200, "{body}");
    for item in body["data"].as_array().expect("data") {
        let i = item["index"].as_u64().expect("index") as usize;
        let bytes = STANDARD
            .decode(item["embedding"].as_str().expect("base64 string"))
            .expect("base64");
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(v, floats[i], "base64 carries exactly the float vector");
    }
}

#[tokio::test]
async fn batches_keep_input_order_and_match_single_requests() {
    let server = Server::start();
    let inputs: Vec<String> = (0..40).map(|i| sentence(i, 3 + (i * 11) % 50)).collect();
    let (status, _, body) = embed_raw(&server, &json!({"model": MODEL, "input": inputs})).await;
    assert_eq!(status, 200, "{body}");
    let batched = float_vectors(&body);

    // Many concurrent single-input requests go through the same batcher, merged differently.
    let singles = futures_util::future::join_all(inputs.iter().map(|text| {
        let server = &server;
        async move {
            let (status, _, body) =
                embed_raw(server, &json!({"model": MODEL, "input": text})).await;
            assert_eq!(status, 200, "{body}");
            float_vectors(&body).remove(0)
        }
    }))
    .await;
    for (i, (a, b)) in batched.iter().zip(&singles).enumerate() {
        assert!(
            cosine(a, b) > 0.99999,
            "input {i} differs between batch and single request"
        );
    }
}

#[tokio::test]
async fn dimensions_normalize_and_aliases() {
    let server = Server::start();
    let text = "Citadel routes embeddings for the fleet.";
    let (_, _, full) = embed_raw(&server, &json!({"model": MODEL, "input": text})).await;
    let full = float_vectors(&full).remove(0);

    let (status, _, body) = embed_raw(
        &server,
        &json!({"model": MODEL, "input": text, "dimensions": 64}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let short = float_vectors(&body).remove(0);
    assert_eq!(short.len(), 64);
    assert!(
        (norm(&short) - 1.0).abs() < 1e-4,
        "re-normalised after truncation"
    );
    assert!(
        cosine(&short, &full[..64]) > 0.9999,
        "the first 64 components, rescaled"
    );

    let (_, _, raw) = embed_raw(
        &server,
        &json!({"model": MODEL, "input": text, "normalize": false}),
    )
    .await;
    let raw = float_vectors(&raw).remove(0);
    assert!(
        (norm(&raw) - 1.0).abs() > 0.01,
        "normalize=false keeps the pooled length"
    );
    assert!(cosine(&raw, &full) > 0.99999);

    // A 2 MB input is truncated like any other: 256 tokens, same vector as its first words.
    let huge = format!("{text} {}", "filler words go here ".repeat(100_000));
    let (status, _, body) = embed_raw(&server, &json!({"model": MODEL, "input": huge})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 256);

    let alias = "sentence-transformers/all-MiniLM-L6-v2";
    let (status, _, body) = embed_raw(&server, &json!({"model": alias, "input": text})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["model"], MODEL,
        "aliases resolve to the canonical name"
    );
}

#[tokio::test]
async fn bad_input_gets_openai_errors_with_the_right_status() {
    let server = Server::with_config("[http]\nbody_limit_bytes = 65536\n");
    let long = "word ".repeat(400);
    let too_many: Vec<String> = (0..2049).map(|i| format!("t{i}")).collect();
    let cases: Vec<(Value, u16, Option<&str>)> = vec![
        (json!({"input": "x"}), 400, Some("model")),
        (
            json!({"model": "no-such-model", "input": "x"}),
            404,
            Some("model"),
        ),
        (json!({"model": MODEL}), 400, Some("input")),
        (json!({"model": MODEL, "input": []}), 400, Some("input")),
        (json!({"model": MODEL, "input": ""}), 400, Some("input")),
        (
            json!({"model": MODEL, "input": ["ok", ""]}),
            400,
            Some("input"),
        ),
        (
            json!({"model": MODEL, "input": too_many}),
            400,
            Some("input"),
        ),
        (
            json!({"model": MODEL, "input": [1, 2, 3]}),
            400,
            Some("input"),
        ),
        (
            json!({"model": MODEL, "input": [[1, 2], [3]]}),
            400,
            Some("input"),
        ),
        (
            json!({"model": MODEL, "input": ["ok", 7]}),
            400,
            Some("input"),
        ),
        (json!({"model": MODEL, "input": 42}), 400, Some("input")),
        (
            json!({"model": MODEL, "input": "x", "encoding_format": "int8"}),
            400,
            Some("encoding_format"),
        ),
        (
            json!({"model": MODEL, "input": "x", "dimensions": 0}),
            400,
            Some("dimensions"),
        ),
        (
            json!({"model": MODEL, "input": "x", "dimensions": -3}),
            400,
            Some("dimensions"),
        ),
        (
            json!({"model": MODEL, "input": "x", "dimensions": 385}),
            400,
            Some("dimensions"),
        ),
        (
            json!({"model": MODEL, "input": long, "truncate": false}),
            400,
            Some("input"),
        ),
        (
            json!({"model": MODEL, "input": "x", "dimensions": "many"}),
            400,
            None,
        ),
    ];
    for (body, expected, param) in cases {
        let (status, _, answer) = embed_raw(&server, &body).await;
        let error = assert_openai_error(status, &answer, expected);
        if let Some(param) = param {
            assert_eq!(error["param"], param, "param for {body}");
        }
    }

    let client = http();
    let url = server.url("/v1/embeddings");
    let raw = |body: &'static str, content_type: &'static str| {
        client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = raw(
        "{\"model\": \"all-minilm\", \"input\": [",
        "application/json",
    )
    .await
    .expect("send");
    let status = malformed.status().as_u16();
    assert_openai_error(status, &malformed.json().await.expect("json"), 400);
    let not_json = raw("model=all-minilm", "application/x-www-form-urlencoded")
        .await
        .expect("send");
    let status = not_json.status().as_u16();
    assert_openai_error(status, &not_json.json().await.expect("json"), 415);

    let huge = json!({"model": MODEL, "input": "a ".repeat(40_000)});
    let (status, _, body) = embed_raw(&server, &huge).await;
    assert_openai_error(status, &body, 413);

    let (status, body) = get_json(&server, "/v1/nothing-here").await;
    assert_openai_error(status, &body, 404);
    let (status, body) = get_json(&server, "/v1/embeddings").await;
    assert_openai_error(status, &body, 405);

    // Long input is cut at 256 tokens by default, as sentence-transformers does.
    let (status, _, body) = embed_raw(
        &server,
        &json!({"model": MODEL, "input": "word ".repeat(400)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 256);
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_and_loses_nothing_else() {
    let server = Server::with_config("[models.all-minilm]\nmax_queued_inputs = 64\n");
    // Distinct texts per request: identical ones would be computed once by the cache.
    let requests: Vec<_> = (0..8)
        .map(|k| {
            let inputs: Vec<String> = (0..64).map(|i| sentence(k * 64 + i, 120)).collect();
            json!({"model": MODEL, "input": inputs})
        })
        .collect();
    let answers =
        futures_util::future::join_all(requests.iter().map(|r| embed_raw(&server, r))).await;
    let mut limited = 0;
    for (status, headers, body) in &answers {
        match status {
            200 => assert_eq!(body["data"].as_array().map(Vec::len), Some(64)),
            429 => {
                limited += 1;
                let error = assert_openai_error(*status, body, 429);
                assert_eq!(error["code"], "rate_limit_exceeded");
                assert!(
                    headers.get("retry-after").is_some(),
                    "429 carries Retry-After"
                );
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(
        limited >= 1,
        "8 concurrent requests of 64 inputs cannot all fit a queue of 64"
    );
    assert!(limited < 8, "at least one request was served");

    let (status, _, body) = embed_raw(
        &server,
        &json!({"model": MODEL, "input": (0..65).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
    )
    .await;
    let error = assert_openai_error(status, &body, 400);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("split"),
        "{error}"
    );
}

#[tokio::test]
async fn a_passed_deadline_answers_504() {
    let server = Server::with_config("[http]\nrequest_timeout_ms = 1\n");
    let inputs: Vec<String> = (0..256).map(|i| sentence(i, 150)).collect();
    let (status, _, body) = embed_raw(&server, &json!({"model": MODEL, "input": inputs})).await;
    let error = assert_openai_error(status, &body, 504);
    assert_eq!(error["code"], "timeout");
}

#[tokio::test]
async fn an_unreachable_mesh_answers_503_naming_it() {
    let server = Server::with_config("[grpc]\nupstream = \"http://127.0.0.1:9\"\n");
    let (status, _, body) = embed_raw(&server, &json!({"model": MODEL, "input": "x"})).await;
    let error = assert_openai_error(status, &body, 503);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1:9"),
        "{error}"
    );
    let live = http()
        .get(server.url("/health/"))
        .send()
        .await
        .expect("send");
    assert_eq!(
        live.status().as_u16(),
        200,
        "liveness does not depend on the mesh"
    );
    let detailed = http()
        .get(server.url("/health/detailed"))
        .send()
        .await
        .expect("send");
    assert_eq!(detailed.status().as_u16(), 503);
}

#[tokio::test]
async fn the_int8_variant_is_served_under_its_own_name_close_to_the_reference() {
    let server = Server::start();
    let (texts, reference) = reference();
    let (status, _, body) = embed_raw(
        &server,
        &json!({"model": "all-minilm:int8", "input": texts}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "all-minilm:int8");
    let int8 = float_vectors(&body);
    let cosines: Vec<f32> = int8
        .iter()
        .zip(&reference)
        .map(|(a, b)| cosine(a, b))
        .collect();
    let min = cosines.iter().copied().fold(f32::INFINITY, f32::min);
    let mean = cosines.iter().sum::<f32>() / cosines.len() as f32;
    assert!(
        min >= 0.95 && mean >= 0.98,
        "int8 vs sentence-transformers: min {min}, mean {mean}"
    );
    assert!(
        min < 0.9999,
        "a quantized graph, not the FP32 one under another name"
    );
}
