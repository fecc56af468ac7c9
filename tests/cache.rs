//! The embedding cache against the real Redis (127.0.0.1:6379; `scripts/ensure-services.sh`
//! starts one): partial hits, key separation for every option, L2 across processes, TTL,
//! corrupt values, bypass headers, modes, single flight, and Redis dying under load.
//! Remote models on a stand-in upstream make every computed input countable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use citadel_standin::{Behaviour, StandIn};
use common::{upstream::*, *};
use futures_util::future::join_all;
use serde_json::{Value, json};

const REDIS: &str = "redis://127.0.0.1:6379";

/// A key prefix no other test (or run) shares; its keys are deleted when it is dropped, so
/// the machine's Redis does not collect test vectors for a day.
struct Namespace(String);

impl std::ops::Deref for Namespace {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for key in keys(6379, &self.0) {
            redis_cli(6379, &["DEL", &key]);
        }
    }
}

fn prefix() -> Namespace {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Namespace(format!("citadel-test-{}-{n}", std::process::id()))
}

fn cache_section(redis: &str, prefix: &str, extra: &str) -> String {
    format!("[cache]\nredis_url = \"{redis}\"\nkey_prefix = \"{prefix}\"\n{extra}\n")
}

fn server(upstream: &StandIn, cache: &str) -> Server {
    let model = model_section("remote", "ollama", &[(&upstream.url(), 1)], "");
    serve(&format!("{model}{cache}"), 0, 3)
}

/// POSTs to /v1/embeddings; returns status, the cache-hits header and the body.
async fn post(server: &Server, body: Value, cache_control: Option<&str>) -> (u16, u64, Value) {
    let mut request = http().post(server.url("/v1/embeddings")).json(&body);
    if let Some(value) = cache_control {
        request = request.header("cache-control", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let hits = response
        .headers()
        .get("x-citadel-cache-hits")
        .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
    (status, hits, response.json().await.unwrap())
}

fn body(inputs: &[String]) -> Value {
    json!({"model": "remote", "input": inputs})
}

fn redis_cli(url_port: u16, args: &[&str]) -> String {
    let port = url_port.to_string();
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port])
        .args(args)
        .output()
        .expect("redis-cli (scripts/ensure-services.sh installs it)");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn keys(port: u16, prefix: &str) -> Vec<String> {
    let pattern = format!("{prefix}:*");
    let out = redis_cli(port, &["--scan", "--pattern", &pattern]);
    out.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_hits_compute_only_the_misses_and_keep_order() {
    let up = standin().await;
    let namespace = prefix();
    let server = server(&up, &cache_section(REDIS, &namespace, ""));
    let all = texts(15);

    let (status, hits, first) = post(&server, body(&all[..10]), None).await;
    assert_eq!((status, hits, up.stats().inputs), (200, 0, 10));
    let (status, hits, second) = post(&server, body(&all[5..]), None).await;
    assert_eq!((status, hits), (200, 5));
    assert_eq!(up.stats().inputs, 15, "only the 5 new texts went upstream");
    let vectors = float_vectors(&second);
    for (v, text) in vectors.iter().zip(&all[5..]) {
        assert_close(v, &expected(text));
    }
    assert_eq!(
        float_vectors(&first)[7],
        vectors[2],
        "a cached vector is the computed one"
    );
    // A cached answer reports the usage its computed twin did.
    let (_, hits, again) = post(&server, body(&all[..10]), None).await;
    assert_eq!(hits, 10);
    assert_eq!(again["usage"], first["usage"]);
    assert!(first["usage"]["prompt_tokens"].as_u64().unwrap() >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_option_change_ever_returns_a_vector_computed_under_other_options() {
    let up = standin().await;
    let namespace = prefix();
    let extra = r#"prompts = { query = "search_query: " }"#;
    let models = format!(
        "{}{}{}",
        model_section("remote", "ollama", &[(&up.url(), 1)], extra),
        model_section("twin", "ollama", &[(&up.url(), 1)], ""),
        cache_section(REDIS, &namespace, ""),
    );
    let server = serve(&models, 0, 3);
    let text = texts(1);
    let base = json!({"model": "remote", "input": text});
    let variants = [
        json!({"model": "remote", "input": text, "dimensions": 64}),
        json!({"model": "remote", "input": text, "normalize": false}),
        json!({"model": "remote", "input": text, "truncate": false}),
        json!({"model": "remote", "input": text, "prompt_name": "query"}),
        json!({"model": "twin", "input": text}),
    ];
    let (_, hits, plain) = post(&server, base.clone(), None).await;
    assert_eq!(hits, 0);
    for variant in &variants {
        let (status, hits, answer) = post(&server, variant.clone(), None).await;
        assert_eq!(
            (status, hits),
            (200, 0),
            "{variant} hit a vector of other options"
        );
        let (_, again, repeat) = post(&server, variant.clone(), None).await;
        assert_eq!(again, 1, "{variant} is cached under its own key");
        assert_eq!(float_vectors(&answer), float_vectors(&repeat));
    }
    let (_, hits, _) = post(&server, base, None).await;
    assert_eq!(hits, 1);
    let query = post(&server, variants[3].clone(), None).await.2;
    assert_close(
        &float_vectors(&query)[0],
        &expected(&format!("search_query: {}", text[0])),
    );
    assert_ne!(float_vectors(&query)[0], float_vectors(&plain)[0]);
    assert_eq!(
        float_vectors(&post(&server, variants[0].clone(), None).await.2)[0].len(),
        64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_serves_a_fresh_process_compact_values_with_a_ttl() {
    let up = standin().await;
    let prefix = prefix();
    let inputs = texts(8);
    {
        let first = server(&up, &cache_section(REDIS, &prefix, ""));
        assert_eq!(post(&first, body(&inputs), None).await.1, 0);
        wait_for_keys(6379, &prefix, 8).await;
    }
    let key = &keys(6379, &prefix)[0];
    assert_eq!(
        redis_cli(6379, &["STRLEN", key]),
        (DIMS * 4 + 4).to_string(),
        "raw f32 and a u32 token count, not JSON"
    );
    let ttl: u64 = redis_cli(6379, &["TTL", key]).parse().unwrap();
    assert!(ttl > 86_000 && ttl <= 86_400, "24 h TTL, got {ttl}");

    let second = server(&up, &cache_section(REDIS, &prefix, ""));
    let (status, hits, answer) = post(&second, body(&inputs), None).await;
    assert_eq!((status, hits, up.stats().inputs), (200, 8, 8));
    assert_close(&float_vectors(&answer)[3], &expected(&inputs[3]));

    // A corrupt value is a miss, computed again and overwritten.
    redis_cli(6379, &["SET", key, "not a vector"]);
    let third = server(&up, &cache_section(REDIS, &prefix, ""));
    let (_, hits, _) = post(&third, body(&inputs), None).await;
    assert_eq!((hits, up.stats().inputs), (7, 9));
    wait_for(|| redis_cli(6379, &["STRLEN", key]) == (DIMS * 4 + 4).to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_their_ttl() {
    let up = standin().await;
    let prefix = prefix();
    let server = server(&up, &cache_section(REDIS, &prefix, "ttl_secs = 1"));
    let inputs = texts(3);
    post(&server, body(&inputs), None).await;
    assert_eq!(post(&server, body(&inputs), None).await.1, 3);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        post(&server, body(&inputs), None).await.1,
        0,
        "expired in L1 and L2"
    );
    assert_eq!(up.stats().inputs, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_bypasses_and_modes_are_obeyed() {
    let up = standin().await;
    let prefix = prefix();
    let server = server(&up, &cache_section(REDIS, &prefix, ""));
    let inputs = texts(4);

    assert_eq!(post(&server, body(&inputs), Some("no-store")).await.1, 0);
    assert_eq!(
        post(&server, body(&inputs), None).await.1,
        0,
        "no-store stored nothing"
    );
    assert_eq!(
        post(&server, body(&inputs), Some("no-cache")).await.1,
        0,
        "no-cache: fresh"
    );
    assert_eq!(up.stats().inputs, 12);
    assert_eq!(post(&server, body(&inputs), None).await.1, 4);
    // no-cache computes afresh but stores: new texts asked with it are hits next time.
    let fresh = texts(40)[30..34].to_vec();
    assert_eq!(post(&server, body(&fresh), Some("no-cache")).await.1, 0);
    assert_eq!(post(&server, body(&fresh), None).await.1, 4);
    drop(server);

    // write_only stores but never serves; read_only serves but never stores.
    let other = texts(20)[10..].to_vec();
    let writer = self::server(&up, &cache_section(REDIS, &prefix, "mode = \"write_only\""));
    assert_eq!(post(&writer, body(&other), None).await.1, 0);
    assert_eq!(post(&writer, body(&other), None).await.1, 0);
    wait_for_keys(6379, &prefix, 4 + 4 + 10).await;
    drop(writer);
    let reader = self::server(&up, &cache_section(REDIS, &prefix, "mode = \"read_only\""));
    assert_eq!(
        post(&reader, body(&other), None).await.1,
        10,
        "served what write_only stored"
    );
    let fresh = texts(30)[25..].to_vec();
    post(&reader, body(&fresh), None).await;
    assert_eq!(
        post(&reader, body(&fresh), None).await.1,
        0,
        "read_only stores nothing"
    );
    drop(reader);
    let off = self::server(&up, &cache_section(REDIS, &prefix, "mode = \"off\""));
    assert_eq!(post(&off, body(&other), None).await.1, 0);
    let (_, health) = get_json(&off, "/health/detailed").await;
    assert_eq!(health["components"]["cache"]["mode"], "off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_misses_are_computed_once() {
    let up = standin().await;
    up.set_behaviour(Behaviour {
        latency_ms: 300,
        ..Behaviour::default()
    });
    let namespace = prefix();
    let server = server(&up, &cache_section(REDIS, &namespace, ""));
    let inputs = texts(16);
    let answers = join_all((0..8).map(|_| post(&server, body(&inputs), None))).await;
    assert!(answers.iter().all(|(status, _, _)| *status == 200));
    assert_eq!(
        up.stats().inputs,
        16,
        "8 identical requests, one computation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_workload_hits_over_95_percent() {
    let up = standin().await;
    let namespace = prefix();
    let server = server(&up, &cache_section(REDIS, &namespace, ""));
    let inputs = texts(16);
    assert_eq!(post(&server, body(&inputs), None).await.1, 0);
    for _ in 0..40 {
        assert_eq!(post(&server, body(&inputs), None).await.1, 16);
    }
    let (_, health) = get_json(&server, "/health/detailed").await;
    let rate = health["components"]["cache"]["hit_rate"].as_f64().unwrap();
    assert!(rate > 0.95, "hit rate {rate} on a repeated workload");
}

/// A private Redis on its own port, so killing it touches no other test.
struct PrivateRedis {
    child: Child,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/ensure-services.sh installs it)");
        let redis = PrivateRedis { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis_cli(port, &["PING"]) != "PONG" {
            assert!(
                Instant::now() < deadline,
                "private redis-server did not start"
            );
            std::thread::yield_now();
        }
        redis
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_slow_then_killed_then_restarted_under_load_fails_nothing() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut redis = PrivateRedis::start(port);
    let up = standin().await;
    let url = format!("redis://127.0.0.1:{port}");
    let namespace = prefix();
    let server = server(
        &up,
        &cache_section(&url, &namespace, "redis_timeout_ms = 100"),
    );

    let load = (0..4).map(|worker| {
        let server = &server;
        async move {
            let until = Instant::now() + Duration::from_millis(3500);
            let (mut n, mut slowest) = (0, Duration::ZERO);
            while Instant::now() < until {
                // Half repeated texts, half new: both levels and the upstream stay busy.
                let inputs = [sentence(n % 8, 6), sentence(worker * 100_000 + n, 6)];
                let started = Instant::now();
                let (status, _, answer) = post(server, body(&inputs), None).await;
                slowest = slowest.max(started.elapsed());
                assert_eq!(status, 200, "a request failed with Redis down: {answer}");
                n += 1;
            }
            (n, slowest)
        }
    });
    let chaos = async {
        // First slow: Redis stalls for 600 ms; lookups give up after 100 ms.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stall = std::thread::spawn(move || redis_cli(port, &["DEBUG", "SLEEP", "0.6"]));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, health) = get_json(&server, "/health/detailed").await;
        assert_eq!(
            health["components"]["cache"]["l2"]["state"], "degraded",
            "{health}"
        );
        let _ = stall.join();
        // Then dead.
        tokio::time::sleep(Duration::from_millis(700)).await;
        redis.kill();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (_, health) = get_json(&server, "/health/detailed").await;
        assert_eq!(
            health["components"]["cache"]["l2"]["state"], "degraded",
            "{health}"
        );
        assert_eq!(health["status"], "degraded");
        redis = PrivateRedis::start(port);
    };
    let (results, ()) = tokio::join!(join_all(load), chaos);
    for (n, slowest) in results {
        assert!(n > 10, "only {n} requests ran");
        assert!(
            slowest < Duration::from_millis(1000),
            "a request took {slowest:?}"
        );
    }
    // It reconnects by itself and writes again.
    wait_for(|| redis_cli(port, &["DBSIZE"]) != "0").await;
    let (_, health) = get_json(&server, "/health/detailed").await;
    assert_eq!(
        health["components"]["cache"]["l2"]["state"], "ok",
        "{health}"
    );
    assert!(
        health["components"]["cache"]["l2"]["errors"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let metrics = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("citadel_cache_errors_total{"),
        "errors are counted"
    );
    drop(redis);
}

async fn wait_for_keys(port: u16, prefix: &str, n: usize) {
    wait_for(|| keys(port, prefix).len() >= n).await;
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_l1_off_every_hit_comes_from_redis() {
    let up = standin().await;
    let prefix = prefix();
    let server = server(&up, &cache_section(REDIS, &prefix, "l1_max_bytes = 0"));
    let inputs = texts(6);
    post(&server, body(&inputs), None).await;
    wait_for_keys(6379, &prefix, 6).await;
    assert_eq!(post(&server, body(&inputs), None).await.1, 6);
    let (_, health) = get_json(&server, "/health/detailed").await;
    let cache = &health["components"]["cache"];
    assert_eq!(cache["l1"]["state"], "disabled", "{cache}");
    assert_eq!(cache["l2"]["hits"], 6, "{cache}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_model_revision_never_reads_the_old_vectors() {
    let up = standin().await;
    let namespace = prefix();
    let inputs = texts(5);
    let with_revision = |revision: &str| {
        let extra = format!("revision = \"{revision}\"");
        let model = model_section("remote", "ollama", &[(&up.url(), 1)], &extra);
        serve(
            &format!("{model}{}", cache_section(REDIS, &namespace, "")),
            0,
            3,
        )
    };
    {
        let before = with_revision("2026-01");
        assert_eq!(post(&before, body(&inputs), None).await.1, 0);
        wait_for_keys(6379, &namespace, 5).await;
    }
    // Same Redis namespace, same texts: only the revision changed (an `ollama pull`).
    let after = with_revision("2026-02");
    assert_eq!(post(&after, body(&inputs), None).await.1, 0);
    assert_eq!(up.stats().inputs, 10);
}

/// Runs the real `citadel` binary; returns (success, stdout, stderr).
fn citadel(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_citadel"))
        .args(args)
        .env_remove("CITADEL_SERVER")
        .env_remove("CITADEL_API_KEY")
        .output()
        .expect("run citadel");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        output.status.success(),
        text(output.stdout),
        text(output.stderr),
    )
}

/// `citadel cache flush --model MODEL` against `server`.
fn flush(model: &str, server: &Server) -> (bool, String, String) {
    citadel(&["cache", "flush", "--model", model, "--server", &server.grpc])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_drops_one_models_vectors_from_memory_and_redis() {
    let up = standin().await;
    let namespace = prefix();
    // Two models on one upstream: the flush must tell their keys apart.
    let models = format!(
        "{}{}",
        model_section("remote", "ollama", &[(&up.url(), 1)], ""),
        model_section("other", "ollama", &[(&up.url(), 1)], "")
    );
    let server = serve(
        &format!("{models}{}", cache_section(REDIS, &namespace, "")),
        0,
        3,
    );
    let all = texts(30);
    let other = |inputs: &[String]| json!({"model": "other", "input": inputs});
    assert_eq!(post(&server, body(&all), None).await.0, 200);
    assert_eq!(post(&server, other(&all[..10]), None).await.0, 200);
    // L2 writes are off the request path.
    let deadline = Instant::now() + Duration::from_secs(5);
    while keys(6379, &namespace).len() < 40 {
        assert!(Instant::now() < deadline, "the writes never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (ok, stdout, stderr) = flush("remote", &server);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("flushed `remote`") && stdout.contains("30 Redis keys deleted"),
        "{stdout}"
    );
    assert!(stderr.contains("keys deleted so far"), "progress: {stderr}");
    assert_eq!(
        keys(6379, &namespace).len(),
        10,
        "only the other model's keys stay"
    );

    // Memory too: every input of the flushed model is computed again, the other is served.
    let computed = up.stats().inputs;
    let (status, hits, _) = post(&server, body(&all), None).await;
    assert_eq!((status, hits), (200, 0));
    assert_eq!(up.stats().inputs, computed + 30);
    let (status, hits, _) = post(&server, other(&all[..10]), None).await;
    assert_eq!((status, hits), (200, 10));

    // The other model's keys go with their own flush; an unknown model is named.
    let (ok, stdout, _) = flush("other", &server);
    assert!(ok && stdout.contains("10 Redis keys deleted"), "{stdout}");
    let (ok, _, stderr) = flush("nope", &server);
    assert!(!ok && stderr.contains("`nope` does not exist"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_with_redis_down_fails_and_says_so() {
    let up = standin().await;
    let dead = dead_url().replace("http://", "redis://");
    let server = server(&up, &cache_section(&dead, &prefix(), ""));
    let (ok, _, stderr) = flush("remote", &server);
    assert!(!ok, "a flush that reached no Redis looked done");
    assert!(
        stderr.contains("unavailable")
            && stderr.contains("is Redis up at cache.redis_url")
            && stderr.contains("run it again"),
        "{stderr}"
    );
    let off = self::server(&up, &cache_section(REDIS, &prefix(), "mode = \"off\""));
    let (ok, _, stderr) = flush("remote", &off);
    assert!(!ok && stderr.contains("no embedding cache"), "{stderr}");
}
