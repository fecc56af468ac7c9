//! `citadel-vecbench`: the vector benchmark's client (bench/run-vectors.sh runs it against a
//! release `citadel serve`). Every leg prints one JSON line.
//!
//! - `ingest`: the same documents embedded alone (EmbeddingService.Embed, one batch at a time,
//!   the ingest's batch size) and ingested as a `vector_ingest` workflow (submit to SUCCESS);
//!   documents per second of each. Run it with the server's cache off, so neither leg is
//!   served from the other's vectors.
//! - `search`: POINTS unit vectors upserted (as vectors: this leg measures the store), grouped
//!   like real embeddings are: 1,000 topics, each point its topic's direction plus as much
//!   noise again (cosine about 0.7 to the topic, 0.5 within it). Then QUERIES searches by
//!   text, distinct texts so every query embedding is computed: p50 / p99 of the whole call,
//!   of the embedding and of the store (the server's own split); then recall@10 of RECALL
//!   vector searches (noisy points of random topics) against exact top-10 by brute force over
//!   the client's copy of the same vectors; then the same on a second collection of
//!   isotropic random vectors, which have no neighbourhoods at all: the worst case for a graph.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use citadel_proto::v1::{
    self, embedding_service_client::EmbeddingServiceClient,
    vector_service_client::VectorServiceClient, workflow_service_client::WorkflowServiceClient,
};
use clap::{Parser, Subcommand};
use serde_json::json;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// gRPC address of the running citadel.
    #[arg(long, global = true, default_value = "http://127.0.0.1:50051")]
    grpc: String,
    #[command(subcommand)]
    leg: Leg,
}

#[derive(Subcommand)]
enum Leg {
    Ingest {
        /// The server's workflows.files_dir: the corpus is written there.
        #[arg(long)]
        files: std::path::PathBuf,
        #[arg(long, default_value_t = 2000)]
        docs: usize,
        /// Texts per Embed call in the baseline: the server's vectors.ingest_batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
    Search {
        #[arg(long, default_value_t = 100_000)]
        points: usize,
        #[arg(long, default_value_t = 300)]
        queries: usize,
        #[arg(long, default_value_t = 100)]
        recall: usize,
    },
}

const MODEL: &str = "all-minilm";
const DIMS: usize = 384;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = Channel::from_shared(args.grpc.clone())?
        .connect()
        .await
        .with_context(|| format!("cannot reach {}", args.grpc))?;
    let max = 64 << 20;
    let vectors = VectorServiceClient::new(channel.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    match args.leg {
        Leg::Ingest { files, docs, batch } => {
            let embeddings = EmbeddingServiceClient::new(channel.clone());
            let workflows = WorkflowServiceClient::new(channel);
            ingest(vectors, embeddings, workflows, &files, docs, batch).await
        }
        Leg::Search {
            points,
            queries,
            recall,
        } => search(vectors, points, queries, recall).await,
    }
}

/// A deterministic sentence of 12 to 30 words: seed `i` always gives the same text.
fn sentence(i: usize) -> String {
    const WORDS: &[&str] = &[
        "river", "engine", "quiet", "market", "signal", "garden", "copper", "winter", "ledger",
        "planet", "harbor", "violet", "sensor", "meadow", "thread", "canyon", "silver", "orbit",
        "pepper", "lantern", "fabric", "tunnel", "glacier", "bridge", "cipher", "forest", "marble",
        "rocket", "saddle", "timber", "velvet", "whistle", "anchor", "basket", "candle", "desert",
        "ember", "falcon", "granite", "hollow",
    ];
    let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let n = 12 + (next() % 19) as usize;
    let mut words: Vec<&str> = (0..n)
        .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
        .collect();
    words.push(["alpha", "beta", "gamma", "delta"][i % 4]);
    format!("{} {i}", words.join(" "))
}

async fn ingest(
    mut vectors: VectorServiceClient<Channel>,
    mut embeddings: EmbeddingServiceClient<Channel>,
    mut workflows: WorkflowServiceClient<Channel>,
    files: &std::path::Path,
    docs: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let texts: Vec<String> = (0..docs).map(sentence).collect();
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": format!("doc-{i}"), "text": t, "payload": {"n": i}}).to_string())
        .collect();
    std::fs::write(files.join("vecbench-corpus.jsonl"), lines.join("\n") + "\n")?;

    let started = Instant::now();
    for chunk in texts.chunks(batch) {
        embeddings
            .embed(v1::EmbedRequest {
                model: MODEL.into(),
                inputs: chunk.to_vec(),
                ..Default::default()
            })
            .await?;
    }
    report("embed-only", docs, started.elapsed());

    let name = "vecbench-ingest";
    let _ = vectors
        .delete_collection(v1::DeleteCollectionRequest { name: name.into() })
        .await;
    vectors
        .create_collection(v1::CreateCollectionRequest {
            name: name.into(),
            model: MODEL.into(),
        })
        .await?;
    let started = Instant::now();
    let submitted = workflows
        .submit(v1::SubmitWorkflowRequest {
            kind: "vector_ingest".into(),
            params_json: json!({"collection": name, "input_file": "vecbench-corpus.jsonl"})
                .to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let id = submitted.workflow.map(|w| w.id).unwrap_or_default();
    loop {
        let w = workflows
            .get(v1::GetWorkflowRequest { id: id.clone() })
            .await?
            .into_inner();
        match w.state() {
            v1::WorkflowState::Success => break,
            v1::WorkflowState::Failure | v1::WorkflowState::Cancelled => {
                bail!("the ingest ended {:?}: {}", w.state(), w.error)
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    report("ingest", docs, started.elapsed());
    let count = vectors
        .count(v1::CountPointsRequest {
            collection: name.into(),
            filter_json: String::new(),
        })
        .await?
        .into_inner()
        .count;
    if count != docs as u64 {
        bail!("the collection holds {count} points, not {docs}");
    }
    Ok(())
}

fn report(leg: &str, docs: usize, took: Duration) {
    let secs = took.as_secs_f64();
    println!(
        "{}",
        json!({"leg": leg, "docs": docs, "seconds": secs, "docs_per_s": docs as f64 / secs})
    );
}

/// A unit vector from a seed (xorshift, uniform in [-1, 1) per dimension, normalised).
fn random_unit(seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let mut v: Vec<f32> = (0..DIMS)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2_000_001) as f32 / 1_000_000.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

async fn search(
    mut client: VectorServiceClient<Channel>,
    points: usize,
    queries: usize,
    recall: usize,
) -> anyhow::Result<()> {
    let name = "vecbench-search";
    let _ = client
        .delete_collection(v1::DeleteCollectionRequest { name: name.into() })
        .await;
    client
        .create_collection(v1::CreateCollectionRequest {
            name: name.into(),
            model: MODEL.into(),
        })
        .await?;
    let topics: Vec<Vec<f32>> = (0..TOPICS)
        .map(|t| random_unit(50_000_000 + t as u64))
        .collect();
    let stored: Vec<Vec<f32>> = (0..points)
        .map(|i| near(&topics[i % TOPICS], i as u64 + 1))
        .collect();
    upsert_all(&mut client, name, &stored).await?;

    let (mut wall, mut embed, mut store) = (Vec::new(), Vec::new(), Vec::new());
    for q in 0..queries {
        let started = Instant::now();
        let answer = client
            .search(v1::SearchRequest {
                collection: name.into(),
                query: Some(v1::search_request::Query::Text(sentence(1_000_000 + q))),
                top_k: Some(10),
                with_payload: Some(false),
                ..Default::default()
            })
            .await?
            .into_inner();
        wall.push(started.elapsed().as_micros() as u64);
        embed.push(answer.embed_us);
        store.push(answer.store_us);
    }
    println!(
        "{}",
        json!({"leg": "search-text", "points": points, "queries": queries,
            "wall": percentiles(&mut wall), "embed": percentiles(&mut embed), "store": percentiles(&mut store)})
    );

    let queries: Vec<Vec<f32>> = (0..recall)
        .map(|q| near(&topics[(q * 7919) % TOPICS], 10_000_000 + q as u64))
        .collect();
    recall_leg(&mut client, name, "recall-at-10", &stored, &queries).await?;

    // The worst case: isotropic random vectors, where the true neighbours are barely closer
    // than any other point.
    let iso = "vecbench-isotropic";
    let _ = client
        .delete_collection(v1::DeleteCollectionRequest { name: iso.into() })
        .await;
    client
        .create_collection(v1::CreateCollectionRequest {
            name: iso.into(),
            model: MODEL.into(),
        })
        .await?;
    let random: Vec<Vec<f32>> = (0..points).map(|i| random_unit(i as u64 + 1)).collect();
    upsert_all(&mut client, iso, &random).await?;
    let queries: Vec<Vec<f32>> = (0..recall)
        .map(|q| random_unit(20_000_000 + q as u64))
        .collect();
    recall_leg(
        &mut client,
        iso,
        "recall-at-10-isotropic",
        &random,
        &queries,
    )
    .await?;
    for n in [name, iso] {
        let _ = client
            .delete_collection(v1::DeleteCollectionRequest { name: n.into() })
            .await;
    }
    Ok(())
}

const TOPICS: usize = 1_000;

/// A point of `topic`: its direction plus noise of the same length, normalised.
fn near(topic: &[f32], seed: u64) -> Vec<f32> {
    let noise = random_unit(seed.wrapping_add(1 << 40));
    let mut v: Vec<f32> = topic.iter().zip(&noise).map(|(t, n)| t + n).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

async fn upsert_all(
    client: &mut VectorServiceClient<Channel>,
    name: &str,
    stored: &[Vec<f32>],
) -> anyhow::Result<()> {
    let started = Instant::now();
    for (b, chunk) in stored.chunks(1000).enumerate() {
        let points = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| v1::Point {
                id: format!("v-{}", b * 1000 + i),
                content: Some(v1::point::Content::Vector(v1::Vector { values: v.clone() })),
                payload_json: String::new(),
                chunk: 0,
            })
            .collect();
        client
            .upsert_points(v1::UpsertPointsRequest {
                collection: name.into(),
                points,
            })
            .await?;
    }
    eprintln!(
        "{} vectors upserted into {name} in {:.1} s",
        stored.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Recall@10 of vector searches for `queries` against exact top-10 over `stored`.
async fn recall_leg(
    client: &mut VectorServiceClient<Channel>,
    name: &str,
    leg: &str,
    stored: &[Vec<f32>],
    queries: &[Vec<f32>],
) -> anyhow::Result<()> {
    let mut found = 0usize;
    let mut store_vec = Vec::new();
    for query in queries {
        let answer = client
            .search(v1::SearchRequest {
                collection: name.into(),
                query: Some(v1::search_request::Query::Vector(v1::Vector {
                    values: query.clone(),
                })),
                top_k: Some(10),
                with_payload: Some(false),
                ..Default::default()
            })
            .await?
            .into_inner();
        store_vec.push(answer.store_us);
        let mut exact: Vec<(f32, usize)> = stored
            .iter()
            .enumerate()
            .map(|(i, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum(), i))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let want: std::collections::HashSet<String> =
            exact[..10].iter().map(|(_, i)| format!("v-{i}")).collect();
        found += answer
            .hits
            .iter()
            .filter(|h| want.contains(&h.document_id))
            .count();
    }
    println!(
        "{}",
        json!({"leg": leg, "points": stored.len(), "queries": queries.len(),
            "recall": found as f64 / (queries.len() * 10) as f64, "store": percentiles(&mut store_vec)})
    );
    Ok(())
}

fn percentiles(samples: &mut [u64]) -> serde_json::Value {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    json!({"p50_us": at(0.50), "p99_us": at(0.99), "max_us": at(1.0)})
}
