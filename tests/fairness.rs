//! Fairness of the in-process model's batcher: a bulk request of long texts must not make
//! another caller's single-input request wait for all of it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::*;
use serde_json::json;

/// Long texts: each is cut at the model's 256 tokens, so every input is one full-width run.
const BULK_INPUTS: usize = 200;
const BULK_WORDS: usize = 300;
const SMALL_REQUESTS: usize = 20;
/// A queue of 256 inputs: one request may hold up to 128 of them while others are queued.
const QUEUE: &str = "[models.all-minilm]\nmax_queued_inputs = 256\n";
/// More than half the queue, but it fits beside the bulk request.
const LARGE: usize = 130;

async fn single(server: &Server, seed: usize) -> Duration {
    let started = Instant::now();
    let text = format!("small request {seed}");
    let (status, _, body) = embed_raw(server, &json!({"model": MODEL, "input": text})).await;
    assert_eq!(status, 200, "{body}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_request_leaves_room_and_model_time_for_other_callers() {
    let server = Server::with_config(QUEUE);
    single(&server, 0).await;
    let alone = single(&server, 1).await;

    let bulk_inputs: Vec<String> = (0..BULK_INPUTS).map(|i| sentence(i, BULK_WORDS)).collect();
    let done = AtomicBool::new(false);
    let bulk = async {
        let started = Instant::now();
        let request = json!({"model": MODEL, "input": bulk_inputs});
        let (status, _, body) = embed_raw(&server, &request).await;
        done.store(true, Ordering::Release);
        assert_eq!(status, 200, "{body}");
        started.elapsed()
    };
    let smalls = async {
        // Let the bulk request be tokenized and reach the batcher first.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut beside = Vec::new();
        for seed in 0..SMALL_REQUESTS {
            if done.load(Ordering::Acquire) {
                break;
            }
            beside.push(single(&server, 100 + seed).await);
        }
        beside
    };
    let large = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        embed_raw(&server, &large_request()).await
    };
    let (bulk, beside, (status, _, body)) = tokio::join!(bulk, smalls, large);
    let worst = beside.iter().max().copied().unwrap_or_default();
    println!(
        "alone {alone:?}; bulk of {BULK_INPUTS} took {bulk:?}; {} small requests beside it, worst {worst:?}",
        beside.len()
    );
    assert!(
        bulk >= Duration::from_secs(1),
        "the bulk request ({bulk:?}) was too quick to show anything"
    );
    assert!(
        !beside.is_empty(),
        "no small request ran beside the bulk one"
    );
    // Before the fix a newcomer waited for the whole window, i.e. nearly all of the bulk.
    assert!(
        worst < bulk / 4,
        "a single-input request waited {worst:?} beside a bulk request of {bulk:?} (alone: {alone:?})"
    );

    // The queue share: more than half the queue is refused while another request holds some
    // of it (429, retry later), and served when the model is free again.
    let error = assert_openai_error(status, &body, 429);
    assert_eq!(error["code"], "rate_limit_exceeded");
    let (status, _, body) = embed_raw(&server, &large_request()).await;
    assert_eq!(
        status, 200,
        "alone, a request may use the whole queue: {body}"
    );
}

fn large_request() -> serde_json::Value {
    let inputs: Vec<String> = (0..LARGE).map(|i| format!("large request {i}")).collect();
    json!({"model": MODEL, "input": inputs})
}
