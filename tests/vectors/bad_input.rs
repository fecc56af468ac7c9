//! Bad input gets OpenAI's error JSON with the right status and field, over REST, and the
//! right code over gRPC; a workflow with a bad target fails with the reason.

use citadel_proto::v1::{self, vector_service_client::VectorServiceClient};
use serde_json::{Value, json};
use tonic::Code;

use crate::common::{Server, assert_openai_error};
use crate::{call, create, finished, submit, wait_for};

async fn error(server: &Server, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
    let (status, body) = call(server, method, path, body).await;
    assert_openai_error(status, &body, want)
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_with_the_reason() {
    let server = Server::start();
    create(&server, "c").await;

    // Names and models.
    let e = error(
        &server,
        "POST",
        "/api/v1/collections",
        Some(json!({"name": "c", "model": "all-minilm"})),
        409,
    )
    .await;
    assert_eq!(e["code"], "collection_exists");
    let e = error(
        &server,
        "POST",
        "/api/v1/collections",
        Some(json!({"name": "../etc", "model": "all-minilm"})),
        400,
    )
    .await;
    assert_eq!(e["param"], "name");
    let e = error(
        &server,
        "POST",
        "/api/v1/collections",
        Some(json!({"name": "d", "model": "no-such-model"})),
        404,
    )
    .await;
    assert_eq!(e["param"], "model", "{e}");
    error(
        &server,
        "POST",
        "/api/v1/collections",
        Some(json!({"name": "d"})),
        400,
    )
    .await;
    error(
        &server,
        "POST",
        "/api/v1/collections",
        Some(json!({"name": "d", "model": "all-minilm", "size": 3})),
        400,
    )
    .await;

    // Unknown collection, everywhere.
    for (method, path, body) in [
        ("GET", "/api/v1/collections/nope", None),
        ("DELETE", "/api/v1/collections/nope", None),
        (
            "POST",
            "/api/v1/collections/nope/search",
            Some(json!({"query": "x"})),
        ),
        (
            "POST",
            "/api/v1/collections/nope/points",
            Some(json!({"points": [{"id": "a", "text": "x"}]})),
        ),
        ("POST", "/api/v1/collections/nope/count", Some(json!({}))),
    ] {
        let e = error(&server, method, path, body, 404).await;
        assert_eq!(e["code"], "collection_not_found", "{method} {path}: {e}");
    }

    // Points: wrong size (both sizes named), oversized or reserved payloads, neither/both
    // contents, empty text, too many points.
    let points = "/api/v1/collections/c/points";
    let e = error(
        &server,
        "POST",
        points,
        Some(json!({"points": [{"id": 1, "vector": [0.1, 0.2, 0.3]}]})),
        400,
    )
    .await;
    let m = e["message"].as_str().unwrap();
    assert!(m.contains('3') && m.contains("384"), "{m}");
    let big = "x".repeat(70_000);
    let e = error(
        &server,
        "POST",
        points,
        Some(json!({"points": [{"id": 1, "text": "t", "payload": {"big": big}}]})),
        400,
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("payload"), "{e}");
    let e = error(
        &server,
        "POST",
        points,
        Some(json!({"points": [{"id": 1, "text": "t", "payload": {"_citadel_text": "x"}}]})),
        400,
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("reserved"), "{e}");
    error(
        &server,
        "POST",
        points,
        Some(json!({"points": [{"id": 1}]})),
        400,
    )
    .await;
    error(
        &server,
        "POST",
        points,
        Some(json!({"points": [{"id": 1, "text": "t", "vector": [1.0]}]})),
        400,
    )
    .await;
    error(
        &server,
        "POST",
        points,
        Some(json!({"points": [{"id": 1, "text": "   "}]})),
        400,
    )
    .await;
    error(&server, "POST", points, Some(json!({"points": []})), 400).await;
    let many: Vec<Value> = (0..1025)
        .map(|i| json!({"id": i, "vector": vec![0.0; 384]}))
        .collect();
    error(&server, "POST", points, Some(json!({"points": many})), 400).await;
    error(
        &server,
        "POST",
        points,
        Some(json!({"points": [{"id": 1, "text": "t", "payload": [1]}]})),
        400,
    )
    .await;

    // Search: malformed filters name the place, bad top_k, wrong query size, no query.
    let search = "/api/v1/collections/c/search";
    let e = error(
        &server,
        "POST",
        search,
        Some(json!({"query": "x", "filter": {"must": [{"key": "a", "mach": {"value": 1}}]}})),
        400,
    )
    .await;
    assert_eq!(e["param"], "filter", "{e}");
    assert!(e["message"].as_str().unwrap().contains("must[0]"), "{e}");
    let e = error(
        &server,
        "POST",
        search,
        Some(json!({"query": "x", "filter": {"must": [{"key": "a", "range": {"gt": "high"}}]}})),
        400,
    )
    .await;
    assert_eq!(e["param"], "filter", "{e}");
    error(
        &server,
        "POST",
        search,
        Some(json!({"query": "x", "filter": "lang = en"})),
        400,
    )
    .await;
    let e = error(
        &server,
        "POST",
        search,
        Some(json!({"query": "x", "top_k": 0})),
        400,
    )
    .await;
    assert_eq!(e["param"], "top_k");
    error(
        &server,
        "POST",
        search,
        Some(json!({"query": "x", "top_k": 5000})),
        400,
    )
    .await;
    error(
        &server,
        "POST",
        search,
        Some(json!({"query": [1.0, 2.0]})),
        400,
    )
    .await;
    error(&server, "POST", search, Some(json!({"top_k": 3})), 400).await;
    error(&server, "POST", search, Some(json!({"query": ""})), 400).await;
    let (status, _) = call(
        &server,
        "POST",
        "/api/v1/collections/c/points/delete",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 400);

    // gRPC codes for the same mistakes.
    let mut client = VectorServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let unknown = client
        .get_collection(v1::GetCollectionRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let exists = client
        .create_collection(v1::CreateCollectionRequest {
            name: "c".into(),
            model: "all-minilm".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(exists.code(), Code::AlreadyExists);
    let bad_filter = client
        .count(v1::CountPointsRequest {
            collection: "c".into(),
            filter_json: "{not json".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_filter.code(), Code::InvalidArgument);
    let bad_payload = client
        .upsert_points(v1::UpsertPointsRequest {
            collection: "c".into(),
            points: vec![v1::Point {
                id: "a".into(),
                content: Some(v1::point::Content::Text("t".into())),
                payload_json: "[1, 2]".into(),
                chunk: 0,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(bad_payload.code(), Code::InvalidArgument);

    // Ingest: bad params refused at submit; a missing collection fails the workflow, once.
    let body = json!({"kind": "vector_ingest", "params": {"collection": "c", "documents": [{"text": "no id"}]}});
    let (status, e) = call(&server, "POST", "/api/v1/workflows", Some(body)).await;
    assert_openai_error(status, &e, 400);
    let id = submit(
        &server,
        json!({"collection": "gone", "documents": [{"id": "a", "text": "x"}]}),
    )
    .await;
    let w = wait_for(&server, &id, finished).await;
    assert_eq!(w["state"], "FAILURE", "{w}");
    assert_eq!(
        w["attempts"], 1,
        "a missing collection is not worth retrying: {w}"
    );
    assert!(w["error"].as_str().unwrap().contains("gone"), "{w}");
}
