//! The production store: `vectors.store = "qdrant"`, Citadel's `qdrant-client` code talking
//! Qdrant's gRPC protocol over a real socket to the stand-in Qdrant (`crates/standin`).

use std::time::Duration;

use citadel_standin::QdrantStandIn;
use serde_json::json;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::common::{Server, get_json, scratch_dir};
use crate::{
    call, corpus, create, finished, labelled, points_count, recall_at_1, search, submit, wait_for,
};

async fn vector_health(server: &Server) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(server.grpc.clone()).unwrap();
    let mut client = HealthClient::new(channel.connect().await.unwrap());
    let request = HealthCheckRequest {
        service: "citadel.v1.VectorService".into(),
    };
    client.check(request).await.unwrap().into_inner().status()
}

async fn wait_health(server: &Server, want: ServingStatus) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while vector_health(server).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "VectorService health never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Collections, ingestion with failures in the middle (retried without duplicates), search by
/// text with filters, deletes, and health that follows Qdrant going down and up.
#[tokio::test(flavor = "multi_thread")]
async fn through_qdrant_client_against_the_stand_in() {
    let qdrant = QdrantStandIn::start(scratch_dir("qdrant")).await.unwrap();
    let files = scratch_dir("files");
    let total = corpus(&files, "corpus.jsonl", 460);
    let url = qdrant.url();
    let server = Server::with_env(
        "",
        &[
            ("CITADEL_VECTORS__STORE", "qdrant"),
            ("CITADEL_QDRANT__URL", &url),
            ("CITADEL_QDRANT__TIMEOUT_MS", "2000"),
            ("CITADEL_WORKFLOWS__FILES_DIR", files.to_str().unwrap()),
            ("CITADEL_WORKFLOWS__POLL_INTERVAL_MS", "100"),
            ("CITADEL_WORKFLOWS__DEFAULT_INITIAL_BACKOFF_MS", "100"),
            ("CITADEL_VECTORS__INGEST_BATCH", "20"),
        ],
    );
    wait_health(&server, ServingStatus::Serving).await;
    let created = create(&server, "kb").await;
    assert_eq!(created["dimensions"], 384);
    // The binding lives in Qdrant: a fresh look (not the core's memory) finds the model.
    let (_, list) = call(&server, "GET", "/api/v1/collections", None).await;
    assert_eq!(list["data"][0]["model"], "all-minilm", "{list}");
    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/collections",
        Some(json!({"name": "kb", "model": "all-minilm"})),
    )
    .await;
    assert_eq!(status, 409, "Qdrant's 'already exists' is a 409: {body}");

    // Six failed upserts in a row outlast the retries (qdrant-client reconnects and tries once
    // more, Citadel's store tries three times): the attempt fails, and the workflow retries it
    // from its checkpoint.
    let id = submit(
        &server,
        json!({"collection": "kb", "input_file": "corpus.jsonl"}),
    )
    .await;
    wait_for(&server, &id, |w| {
        w["progress"]["done"].as_u64().unwrap_or(0) >= 60 || finished(w)
    })
    .await;
    qdrant.control.fail_upserts(6);
    let done = wait_for(&server, &id, finished).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert!(
        done["attempts"].as_u64().unwrap() >= 2,
        "the failures never reached the workflow: {done}"
    );
    assert_eq!(
        points_count(&server, "kb").await,
        total as u64,
        "no duplicates, none lost"
    );

    let (_, queries) = labelled();
    let recall = recall_at_1(&server, "kb", &queries).await;
    eprintln!("recall@1 through Qdrant's protocol: {recall:.3}");
    assert!(recall >= 0.95, "recall@1 {recall}");
    let life = json!({"must": [{"key": "group", "match": {"value": "life"}}], "should": [
        {"key": "n", "range": {"gte": 30}}, {"key": "topic", "match": {"text": "tax"}}]});
    let found = search(
        &server,
        "kb",
        json!({"query": "rest", "top_k": 40, "filter": life}),
    )
    .await;
    let mut topics: Vec<&str> = found
        .iter()
        .map(|h| h["payload"]["topic"].as_str().unwrap())
        .collect();
    topics.sort_unstable();
    assert_eq!(
        topics,
        [
            "bicycle",
            "kubernetes",
            "origami",
            "solar",
            "sushi",
            "taxes"
        ]
    );

    // Points given as vectors, then deleted by id.
    let vector: Vec<f32> = (0..384).map(|i| if i == 7 { 1.0 } else { 0.0 }).collect();
    let path = "/api/v1/collections/kb/points";
    let (status, body) = call(
        &server,
        "POST",
        path,
        Some(json!({"points": [{"id": "axis-7", "vector": vector}]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let hit = &search(&server, "kb", json!({"query": vector, "top_k": 1})).await[0];
    assert_eq!(hit["document_id"], "axis-7");
    assert!((hit["score"].as_f64().unwrap() - 1.0).abs() < 1e-4, "{hit}");
    let (status, _) = call(
        &server,
        "POST",
        "/api/v1/collections/kb/points/delete",
        Some(json!({"ids": ["axis-7", "sleep"]})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(points_count(&server, "kb").await, total as u64 - 1);

    // Qdrant down: searches answer 503 in OpenAI's shape, health says so; back up, both recover.
    qdrant.control.set_down(true);
    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/collections/kb/search",
        Some(json!({"query": "wine"})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    wait_health(&server, ServingStatus::NotServing).await;
    let (status, health) = get_json(&server, "/health/detailed").await;
    assert_eq!(status, 200, "the embeddings still serve: {health}");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["components"]["vectors"]["state"], "NOT_SERVING");
    qdrant.control.set_down(false);
    wait_health(&server, ServingStatus::Serving).await;
    let hit = &search(&server, "kb", json!({"query": "why is red wine red"})).await[0];
    assert_eq!(hit["document_id"], "wine");

    let (status, _) = call(&server, "DELETE", "/api/v1/collections/kb", None).await;
    assert_eq!(status, 200);
    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/collections/kb/search",
        Some(json!({"query": "wine"})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(qdrant.control.calls() > 20);
}
