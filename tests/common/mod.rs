//! Test harness: runs the real `citadel` binary on free ports and talks to it over sockets.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod jwt;
pub mod pg;
pub mod upstream;

pub const MODEL: &str = "all-minilm";

pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` of the REST edge.
    pub http: String,
    /// `http://127.0.0.1:PORT` of the gRPC server.
    pub grpc: String,
    /// The file given as `--config` (a test may rewrite it and send SIGHUP).
    pub config: PathBuf,
    logs: Arc<Mutex<String>>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails early, with the fix, when `make models` has not run.
fn require_models() {
    let graph = repo_root().join("models/all-minilm/model.onnx");
    assert!(
        graph.is_file(),
        "model files not found in ./models/all-minilm: run `make models` first"
    );
}

fn write_config(toml: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("citadel-test-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, toml).expect("write test config");
    path
}

/// A fresh SQLite workflow database in the temp directory.
pub fn sqlite_url() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("citadel-test-{}-{n}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    format!("sqlite://{}?mode=rwc", path.display())
}

/// A fresh, empty directory in the temp directory.
pub fn scratch_dir(what: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("citadel-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Spawns `citadel` with `args` (from the repo root) and captures its output.
pub fn spawn(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, Arc<Mutex<String>>, mpsc::Receiver<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_citadel"));
    command
        .current_dir(repo_root())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Only the test's own configuration: no CITADEL_* variable from the surrounding shell.
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("CITADEL_")) {
        command.env_remove(key);
    }
    // Each process gets its own workflow database unless the test shares one on purpose.
    if !env.iter().any(|(k, _)| *k == "CITADEL_DATABASE__URL") {
        command.env("CITADEL_DATABASE__URL", sqlite_url());
    }
    // A worker's operations port on a free port, so workers of parallel tests never meet.
    if !env
        .iter()
        .any(|(k, _)| *k == "CITADEL_WORKFLOWS__WORKER_ADDR")
    {
        command.env("CITADEL_WORKFLOWS__WORKER_ADDR", "127.0.0.1:0");
    }
    // ...and its own embedded vector store, never the repo's `data/vectors`.
    if !env.iter().any(|(k, _)| *k == "CITADEL_VECTORS__PATH") {
        command.env("CITADEL_VECTORS__PATH", scratch_dir("vectors"));
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn citadel");
    let logs = Arc::new(Mutex::new(String::new()));
    let (lines_tx, lines_rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    pump(stdout, logs.clone(), Some(lines_tx));
    pump(stderr, logs.clone(), None);
    (child, logs, lines_rx)
}

fn pump(
    stream: impl Read + Send + 'static,
    logs: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            logs.lock().expect("logs").push_str(&format!("{line}\n"));
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    });
}

impl Server {
    /// The embedded defaults.
    pub fn start() -> Server {
        Server::with_config("")
    }

    /// The embedded defaults with `toml` layered on top.
    pub fn with_config(toml: &str) -> Server {
        Server::with_env(toml, &[])
    }

    /// Like `with_config`, with `CITADEL_*` (or other) variables set for the process.
    pub fn with_env(toml: &str, env: &[(&str, &str)]) -> Server {
        require_models();
        let config_path = write_config(toml);
        let config = config_path.to_str().expect("utf-8 path");
        let args = [
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--config",
            config,
        ];
        let (child, logs, lines) = spawn(&args, env);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains("citadel ready") => {
                    let event: Value = serde_json::from_str(&line).expect("JSON log line");
                    let addr = |key: &str| {
                        format!(
                            "http://{}",
                            event["fields"][key].as_str().expect("addr field")
                        )
                    };
                    return Server {
                        child,
                        http: addr("http_addr"),
                        grpc: addr("grpc_addr"),
                        config: config_path,
                        logs,
                    };
                }
                Ok(_) => {}
                Err(_) => panic!(
                    "citadel did not become ready:\n{}",
                    logs.lock().expect("logs")
                ),
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit on its own, letting the test's own connections run
    /// (they must see the server's GOAWAY for it to finish draining).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test shows the server's last words: a flake on CI is then diagnosable.
        if thread::panicking() {
            let logs = self.logs();
            // Without the access log's line per request, which would crowd the rest out.
            let lines: Vec<&str> = logs
                .lines()
                .filter(|l| !l.contains(r#""target":"tower_http::trace"#))
                .collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "--- the server's last {} log lines\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// Log lines a failed test prints from its server.
const LOG_TAIL: usize = 60;

/// A self-signed end-entity certificate for 127.0.0.1, made with `openssl` into `dir`:
/// (certificate path, key path).
pub fn self_signed_certificate(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        // An end-entity certificate (a CA one is refused as a server's).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed to make a test certificate (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// The committed sentence-transformers reference: (texts, vectors).
pub fn reference() -> (Vec<String>, Vec<Vec<f32>>) {
    let text =
        std::fs::read_to_string(repo_root().join("tests/fixtures/all-minilm-reference.json"))
            .expect("reference fixture");
    let fixture: Value = serde_json::from_str(&text).expect("fixture JSON");
    let texts = fixture["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .map(|t| t.as_str().expect("text").to_string());
    let vectors = fixture["embeddings"]
        .as_array()
        .expect("embeddings")
        .iter()
        .map(|v| {
            v.as_array()
                .expect("vector")
                .iter()
                .map(|x| x.as_f64().expect("float") as f32)
                .collect()
        });
    (texts.collect(), vectors.collect())
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

pub fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// A sentence of about `words` words, distinct per `seed`.
pub fn sentence(seed: usize, words: usize) -> String {
    const WORDS: &[&str] = &[
        "river", "engine", "quiet", "forest", "signal", "market", "yellow", "protocol", "garden",
        "vector", "winter", "orbit", "library", "copper", "thunder", "harbor", "crystal", "meadow",
        "cipher", "lantern",
    ];
    let mut out = format!("item {seed}");
    for i in 0..words {
        out.push(' ');
        out.push_str(WORDS[(seed * 7 + i * 13 + i * i) % WORDS.len()]);
    }
    out
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// POSTs JSON to /v1/embeddings; returns status, headers and the parsed body.
pub async fn embed_raw(server: &Server, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = http()
        .post(server.url("/v1/embeddings"))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// GETs `path`; returns the status and the JSON body (null if the body is not JSON).
pub async fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let response = http().get(server.url(path)).send().await.expect("request");
    let status = response.status().as_u16();
    (
        status,
        response.json::<Value>().await.unwrap_or(Value::Null),
    )
}

/// Float vectors from a successful /v1/embeddings body, by `index`.
pub fn float_vectors(body: &Value) -> Vec<Vec<f32>> {
    let data = body["data"].as_array().expect("data");
    let mut out = vec![Vec::new(); data.len()];
    for item in data {
        let index = item["index"].as_u64().expect("index") as usize;
        out[index] = item["embedding"]
            .as_array()
            .expect("float embedding")
            .iter()
            .map(|x| x.as_f64().expect("f") as f32)
            .collect();
    }
    out
}

/// Asserts an OpenAI error body with the given status; returns the error object.
pub fn assert_openai_error(status: u16, body: &Value, expected: u16) -> Value {
    assert_eq!(status, expected, "status for body {body}");
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message in {body}"
    );
    assert!(error["type"].as_str().is_some(), "type in {body}");
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "param/code keys in {body}"
    );
    error.clone()
}

/// Runs `citadel keys ARGS` on `database`; returns (success, stdout, stderr).
pub fn keys(database: &str, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_citadel"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("CITADEL_")) {
        command.env_remove(key);
    }
    let out = command
        .arg("keys")
        .args(args)
        .env("CITADEL_DATABASE__URL", database)
        .output()
        .expect("run citadel keys");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Creates an API key with `citadel keys create ARGS`; returns it (the last line of stdout).
pub fn create_key(database: &str, args: &[&str]) -> String {
    let (ok, stdout, stderr) = keys(database, &[&["create"], args].concat());
    assert!(ok, "keys create failed: {stderr}");
    let key = stdout.lines().last().expect("a line").trim().to_string();
    assert!(
        key.starts_with("ck_"),
        "the key alone on the last line: {stdout:?}"
    );
    key
}
