//! The embedded store end to end, on the defaults a user gets from `scripts/run.sh`.

use std::time::Duration;

use citadel_proto::v1::{self, vector_service_client::VectorServiceClient};
use serde_json::{Value, json};

use crate::common::{Server, scratch_dir, sqlite_url};
use crate::{
    call, corpus, create, finished, labelled, points_count, recall_at_1, search, submit, wait_for,
};

/// One server's environment: its database, vector store and files, kept across restarts.
struct Home {
    database: String,
    vectors: String,
    files: String,
}

impl Home {
    fn new() -> Home {
        let path = |d: std::path::PathBuf| d.to_str().unwrap().to_string();
        Home {
            database: sqlite_url(),
            vectors: path(scratch_dir("vectors")),
            files: path(scratch_dir("files")),
        }
    }

    fn serve(&self) -> Server {
        Server::with_env(
            "",
            &[
                ("CITADEL_DATABASE__URL", &self.database),
                ("CITADEL_VECTORS__PATH", &self.vectors),
                ("CITADEL_WORKFLOWS__FILES_DIR", &self.files),
                ("CITADEL_WORKFLOWS__POLL_INTERVAL_MS", "100"),
                // A killed server's claim comes back quickly to the next one.
                ("CITADEL_WORKFLOWS__LEASE_MS", "2000"),
                ("CITADEL_WORKFLOWS__HEARTBEAT_MS", "500"),
                ("CITADEL_VECTORS__INGEST_BATCH", "50"),
            ],
        )
    }
}

/// Create a collection, ingest 1,000 documents from JSONL as a workflow and kill -9 the
/// server half way; the next server resumes the workflow from its last committed batch, and
/// the collection ends with exactly one point per document. Then search by text (recall@1 on
/// the labelled set), filters, deletes, gRPC, and a restart that keeps everything.
#[tokio::test(flavor = "multi_thread")]
async fn ingest_survives_a_kill_then_search_filter_delete_restart() {
    let home = Home::new();
    let total = corpus(std::path::Path::new(&home.files), "corpus.jsonl", 960);
    let mut server = home.serve();
    let created = create(&server, "docs").await;
    assert_eq!(created["model"], "all-minilm");
    assert_eq!(created["dimensions"], 384);
    assert_eq!(created["points_count"], 0);

    let id = submit(
        &server,
        json!({"collection": "docs", "input_file": "corpus.jsonl"}),
    )
    .await;
    let mid = wait_for(&server, &id, |w| {
        w["progress"]["done"].as_u64().unwrap_or(0) >= 300 || finished(w)
    })
    .await;
    assert_eq!(
        mid["state"], "STARTED",
        "still running before the kill: {mid}"
    );
    let status = std::process::Command::new("kill")
        .args(["-9", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server.wait_exit(Duration::from_secs(10)).await;
    drop(server);

    let server = home.serve();
    let done = wait_for(&server, &id, finished).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert!(done["attempts"].as_u64().unwrap() >= 2, "{done}");
    let result = &done["result"];
    assert_eq!(result["points"], total as u64, "{done}");
    // The second attempt skipped what the first had committed.
    let batches = (total as u64).div_ceil(50);
    assert!(
        result["upsert_calls"].as_u64().unwrap() < batches,
        "a resumed ingest redid committed batches: {done}"
    );
    assert_eq!(points_count(&server, "docs").await, total as u64);

    let (_, queries) = labelled();
    let recall = recall_at_1(&server, "docs", &queries).await;
    eprintln!("recall@1 on the labelled set: {recall:.3}");
    assert!(recall >= 0.95, "recall@1 {recall}");

    let hit = &search(
        &server,
        "docs",
        json!({"query": "what is the tallest peak on earth"}),
    )
    .await[0];
    assert_eq!(hit["document_id"], "everest");
    assert_eq!(hit["chunk"], 0);
    assert!(
        hit["text"].as_str().unwrap().contains("8,849 metres"),
        "{hit}"
    );
    assert_eq!(hit["payload"]["topic"], "everest");
    assert!(
        hit["payload"].get("_citadel_text").is_none(),
        "reserved keys stay inside: {hit}"
    );
    let score = hit["score"].as_f64().unwrap();
    assert!(score > 0.3 && score <= 1.0001, "{hit}");

    filters(&server).await;
    grpc_matches_rest(&server).await;
    let metrics = crate::common::http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    for name in [
        "citadel_vectors_points_written",
        "citadel_vectors_search_duration",
        "citadel_vectors_upsert_duration",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    // Deletes: by document id, then by filter.
    let path = "/api/v1/collections/docs/points/delete";
    let (status, body) = call(&server, "POST", path, Some(json!({"ids": ["everest"]}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(points_count(&server, "docs").await, total as u64 - 1);
    let found = search(
        &server,
        "docs",
        json!({"query": "what is the tallest peak on earth", "top_k": 5}),
    )
    .await;
    assert!(
        found.iter().all(|h| h["document_id"] != "everest"),
        "{found:?}"
    );
    let filler = json!({"filter": {"must": [{"key": "group", "match": {"value": "filler"}}]}});
    let (status, body) = call(&server, "POST", path, Some(filler)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(points_count(&server, "docs").await, 39);

    // A graceful restart keeps every point, and search still answers.
    server.sigterm();
    let mut server = server;
    server.wait_exit(Duration::from_secs(20)).await;
    drop(server);
    let server = home.serve();
    assert_eq!(points_count(&server, "docs").await, 39);
    let (_, list) = call(&server, "GET", "/api/v1/collections", None).await;
    assert_eq!(list["data"][0]["name"], "docs", "{list}");
    let hit = &search(
        &server,
        "docs",
        json!({"query": "folding paper into animals"}),
    )
    .await[0];
    assert_eq!(hit["document_id"], "origami");

    let (status, _) = call(&server, "DELETE", "/api/v1/collections/docs", None).await;
    assert_eq!(status, 200);
    let (status, body) = call(&server, "GET", "/api/v1/collections/docs", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "collection_not_found");
}

async fn filters(server: &Server) {
    // match: only the labelled half called "science".
    let science = json!({"must": [{"key": "group", "match": {"value": "science"}}]});
    let found = search(
        server,
        "docs",
        json!({"query": "nature", "top_k": 50, "filter": science}),
    )
    .await;
    assert_eq!(found.len(), 20, "{found:?}");
    assert!(found.iter().all(|h| h["payload"]["group"] == "science"));
    // range, with must_not.
    let filter = json!({"must": [{"key": "n", "range": {"lt": 10}}],
        "must_not": [{"key": "topic", "match": {"any": ["volcano", "chess"]}}]});
    let found = search(
        server,
        "docs",
        json!({"query": "anything", "top_k": 100, "filter": filter}),
    )
    .await;
    let mut ns: Vec<u64> = found
        .iter()
        .map(|h| h["payload"]["n"].as_u64().unwrap())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, [1, 2, 3, 4, 5, 7, 8, 9], "{found:?}");
    // A threshold trims what scores under it; scores come best first.
    let found = search(
        server,
        "docs",
        json!({"query": "how do bees tell each other where flowers are",
        "top_k": 10, "score_threshold": 0.5}),
    )
    .await;
    assert!(!found.is_empty() && found.len() < 10, "{found:?}");
    let scores: Vec<f64> = found.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores.iter().all(|s| *s >= 0.5));
    // Count with a filter, and without payloads.
    let (status, counted) = call(
        server,
        "POST",
        "/api/v1/collections/docs/count",
        Some(json!({"filter": {"must": [{"key": "group", "match": {"value": "filler"}}]}})),
    )
    .await;
    assert_eq!(status, 200, "{counted}");
    assert_eq!(counted["count"], 960);
    let bare = search(
        server,
        "docs",
        json!({"query": "coffee", "top_k": 1, "with_payload": false}),
    )
    .await;
    assert!(
        bare[0].get("payload").is_none() && bare[0].get("text").is_none(),
        "{bare:?}"
    );
    assert_eq!(bare[0]["document_id"], "coffee");
}

/// The same search over gRPC finds what REST found, and the store/embed split is reported.
async fn grpc_matches_rest(server: &Server) {
    let mut client = VectorServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let query = "how do plants make food from light";
    let answer = client
        .search(v1::SearchRequest {
            collection: "docs".into(),
            query: Some(v1::search_request::Query::Text(query.into())),
            top_k: Some(3),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rest = search(server, "docs", json!({"query": query, "top_k": 3})).await;
    let ids: Vec<&str> = answer.hits.iter().map(|h| h.document_id.as_str()).collect();
    let rest_ids: Vec<&str> = rest
        .iter()
        .map(|h| h["document_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, rest_ids);
    assert_eq!(ids[0], "photosynthesis");
    assert!(answer.embed_us > 0 && answer.store_us > 0, "{answer:?}");
    let payload: Value = serde_json::from_str(&answer.hits[0].payload_json).unwrap();
    assert_eq!(payload["topic"], "photosynthesis");
    let info = client
        .get_collection(v1::GetCollectionRequest {
            name: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.model.as_str(), info.dimensions, info.distance.as_str()),
        ("all-minilm", 384, "cosine")
    );
}
