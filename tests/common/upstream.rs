//! Helpers for tests of remote models: stand-in upstream servers and configurations that
//! route to them. The in-process models are switched off so only the remote ones load.

use citadel_standin::{StandIn, StandInConfig};
use serde_json::{Value, json};

use super::{Server, embed_raw};

/// The model name the stand-ins serve, and its size.
pub const UPSTREAM_MODEL: &str = "all-minilm";
pub const DIMS: usize = 384;

pub async fn standin() -> StandIn {
    StandIn::start(StandInConfig::single(UPSTREAM_MODEL, DIMS))
        .await
        .expect("start stand-in")
}

/// A loopback URL where nothing listens (bound, then released).
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

/// Switches off the embedded in-process models.
pub const NO_LOCAL_MODELS: &str = "
[models.all-minilm]
enabled = false
[models.\"all-minilm:int8\"]
enabled = false
";

/// Fast retries and a quick breaker (opening after `threshold` failures in a row), so tests
/// see them act within a second.
pub fn upstream_section(probe_ms: u64, attempts: u32, threshold: u32) -> String {
    format!(
        "
[upstream]
probe_interval_ms = {probe_ms}
attempt_timeout_ms = 5000
[upstream.retry]
max_attempts = {attempts}
initial_backoff_ms = 5
max_backoff_ms = 50
[upstream.breaker]
failure_threshold = {threshold}
open_ms = 300
"
    )
}

/// One remote model `name` of `backend` over `endpoints` (url, weight), plus `extra` keys.
pub fn model_section(name: &str, backend: &str, endpoints: &[(&str, u32)], extra: &str) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|(url, weight)| format!("{{ url = \"{url}\", weight = {weight} }}"))
        .collect();
    let upstream_model = match extra.contains("upstream_model") {
        true => String::new(),
        false => format!("upstream_model = \"{UPSTREAM_MODEL}\""),
    };
    format!(
        "
[models.{name}]
backend = \"{backend}\"
endpoints = [{}]
{upstream_model}
dimensions = {DIMS}
max_input_tokens = 256
{extra}
",
        endpoints.join(", ")
    )
}

/// Citadel serving `models` (sections from `model_section`) with the test upstream policy:
/// probes every `probe_ms` (0: none), `attempts` per chunk, breakers opening after 3 failures.
pub fn serve(models: &str, probe_ms: u64, attempts: u32) -> Server {
    serve_with_threshold(models, probe_ms, attempts, 3)
}

///
/// Routing tests repeat texts and count upstream calls, so the cache is off unless `models`
/// brings its own `[cache]` section.
pub fn serve_with_threshold(models: &str, probe_ms: u64, attempts: u32, threshold: u32) -> Server {
    let cache = match models.contains("[cache]") {
        true => "",
        false => "\n[cache]\nmode = \"off\"\n",
    };
    let config = format!(
        "{NO_LOCAL_MODELS}{}{models}{cache}",
        upstream_section(probe_ms, attempts, threshold)
    );
    Server::with_config(&config)
}

pub async fn embed(server: &Server, model: &str, inputs: &[String]) -> (u16, Value) {
    let (status, _, body) = embed_raw(server, &json!({"model": model, "input": inputs})).await;
    (status, body)
}

/// The stand-in's vector for `text`, as Citadel returns it (normalised).
pub fn expected(text: &str) -> Vec<f32> {
    citadel_standin::vector(text, DIMS)
}

pub fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| super::sentence(i, 8)).collect()
}

pub fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "vectors differ by {worst}");
}

/// The entry for `model` in /health/detailed.
pub async fn model_health(server: &Server, model: &str) -> Value {
    let (_, body) = super::get_json(server, "/health/detailed").await;
    body["components"]["models"]
        .as_array()
        .and_then(|models| models.iter().find(|m| m["name"] == model).cloned())
        .unwrap_or_else(|| panic!("{model} missing from /health/detailed: {body}"))
}
