//! The `citadel` command line: configuration checks and start-up failures, `doctor`
//! (`cli/doctor.rs`), `backup` and `restore` (`cli/backup.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "cli/backup.rs"]
mod backup;
mod common;
#[path = "cli/doctor.rs"]
mod doctor;

use std::{process::Command, time::Duration};

fn citadel(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_citadel"));
    command.current_dir(env!("CARGO_MANIFEST_DIR")).args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("CITADEL_")) {
        command.env_remove(key);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run citadel");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        output.status.success(),
        text(output.stdout),
        text(output.stderr),
    )
}

/// `serve` with `file` on free loopback ports.
fn serve_args(file: &str) -> [&str; 7] {
    [
        "serve",
        "--config",
        file,
        "--http-addr",
        "127.0.0.1:0",
        "--grpc-addr",
        "127.0.0.1:0",
    ]
}

fn temp_config(name: &str, toml: &str) -> String {
    let path = std::env::temp_dir().join(format!("citadel-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, toml).expect("write");
    path.to_string_lossy().into_owned()
}

#[test]
fn config_check_validates_production_without_connecting_and_masks_secrets() {
    let env = [(
        "CITADEL_DATABASE__URL",
        "postgres://citadel:hunter2@192.168.10.35:5432/citadel",
    )];
    let (ok, stdout, stderr) = citadel(
        &["config", "check", "--config", "config/production.toml"],
        &env,
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("configuration OK"));
    assert!(
        stdout.contains("http://192.168.10.34:8002")
            && stdout.contains("http://192.168.10.28:8000")
    );
    assert!(
        stdout.contains("nomic-embed-text")
            && stdout.contains("bge-m3")
            && stdout.contains("mxbai-embed-large")
    );
    assert!(
        stdout.contains("postgres://citadel:***@192.168.10.35"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "secret leaked");
}

#[test]
fn layers_apply_in_order_defaults_file_variables_flags() {
    let file = temp_config(
        "layers",
        "[http]\naddr = \"127.0.0.1:7000\"\nrequest_timeout_ms = 1234\n",
    );
    let env = [
        ("CITADEL_HTTP__ADDR", "127.0.0.1:7001"),
        ("CITADEL_GRPC__ADDR", "127.0.0.1:7002"),
    ];
    let args = [
        "config",
        "check",
        "--config",
        &file,
        "--grpc-addr",
        "127.0.0.1:7003",
    ];
    let (ok, stdout, stderr) = citadel(&args, &env);
    assert!(ok, "{stderr}");
    let config: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        config["http"]["request_timeout_ms"], 1234,
        "file over defaults"
    );
    assert_eq!(
        config["http"]["addr"], "127.0.0.1:7001",
        "variables over file"
    );
    assert_eq!(
        config["grpc"]["addr"], "127.0.0.1:7003",
        "flags over variables"
    );
    assert_eq!(
        config["http"]["body_limit_bytes"], 16777216,
        "defaults underneath"
    );
}

#[test]
fn bad_configuration_names_the_key() {
    let cases = [
        ("[http]\naddr = \"not an address\"\n", "http.addr"),
        ("[http]\nadress = \"127.0.0.1:1\"\n", "adress"),
        (
            "[models.all-minilm]\ndimensions = 0\n",
            "models.all-minilm.dimensions",
        ),
        (
            "[models.tiny]\nbackend = \"ollama\"\ndimensions = 8\nmax_input_tokens = 8\n",
            "models.tiny.endpoints",
        ),
        ("[grpc]\nupstream = \"localhost:50051\"\n", "grpc.upstream"),
        (
            "[telemetry]\notlp_endpoint = \"collector:4317\"\n",
            "telemetry.otlp_endpoint",
        ),
        (
            "[telemetry]\nsample_ratio = 1.5\n",
            "telemetry.sample_ratio",
        ),
        (
            "[workflows]\nmonitor_interval_ms = 0\n",
            "workflows.monitor_interval_ms",
        ),
        (
            "[[llm.servers]]\nurl = \"http://127.0.0.1:1\"\n",
            "llm.servers[0].name",
        ),
        (
            "[[llm.servers]]\nname = \"a\"\nurl = \"ftp://x\"\n",
            "llm.servers[0].url",
        ),
        (
            "[[llm.servers]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nidle_timeout_ms = 0\n",
            "llm.servers[0].idle_timeout_ms",
        ),
        ("[llm]\nttft_timeout_ms = 0\n", "llm.ttft_timeout_ms"),
        ("[llm.fallbacks]\na = [\"a\"]\n", "llm.fallbacks.a"),
        (
            "[models.tiny]\nbackend = \"ollama\"\ndimensions = 8\nmax_input_tokens = 8\nendpoints = [{ url = \"http://127.0.0.1:1\", first_byte_timeout_ms = 0 }]\n",
            "models.tiny.endpoints[0].first_byte_timeout_ms",
        ),
        (
            "[models.all-minilm]\nfallback = \"all-minilm\"\n",
            "models.all-minilm.fallback",
        ),
        (
            "[models.all-minilm]\nfallback = \"nowhere\"\n",
            "models.all-minilm.fallback",
        ),
        (
            "[models.\"all-minilm:int8\"]\ndimensions = 256\n[models.all-minilm]\nfallback = \"all-minilm:int8\"\n",
            "models.all-minilm.fallback",
        ),
        (
            "[models.all-minilm]\ndefault_prompt = \"query\"\n",
            "models.all-minilm.default_prompt",
        ),
        (
            "[models.all-minilm]\nenabled = false\n[models.\"all-minilm:int8\"]\nenabled = false\n",
            "models",
        ),
        (
            "[upstream.retry]\nmax_attempts = 0\n",
            "upstream.retry.max_attempts",
        ),
        (
            "[upstream.breaker]\nfailure_threshold = 0\n",
            "upstream.breaker.failure_threshold",
        ),
        ("[cache]\nredis_url = \"localhost\"\n", "cache.redis_url"),
        (
            "[workflows]\nlease_ms = 1000\nheartbeat_ms = 1000\n",
            "workflows.heartbeat_ms",
        ),
        ("[workflows]\nconcurrency = 0\n", "workflows.concurrency"),
        ("[database]\nurl = \"mysql://x\"\n", "database.url"),
        (
            "[http.connections]\nmax_connections = 0\n",
            "http.connections.max_connections",
        ),
        (
            "[grpc.connections]\nwrite_timeout_ms = 0\n",
            "grpc.connections.write_timeout_ms",
        ),
        ("[grpc.connections]\nmax_streams = 5\n", "max_streams"),
        (
            "[grpc]\nrequest_body_timeout_ms = 0\n",
            "grpc.request_body_timeout_ms",
        ),
        (
            "[http]\nbody_idle_timeout_ms = 0\n",
            "http.body_idle_timeout_ms",
        ),
        (
            "[shutdown]\ndrain_grace_ms = 0\n",
            "shutdown.drain_grace_ms",
        ),
        (
            "[workflows]\nmax_params_bytes = 0\n",
            "workflows.max_params_bytes",
        ),
        (
            "[models.all-minilm]\nmax_window_tokens = 10\n",
            "models.all-minilm.max_window_tokens",
        ),
        (
            "[auth]\nmode = \"required\"\nissuer = \"https://clerk.example\"\n",
            "auth.jwks_url",
        ),
        ("[auth]\nalgorithms = [\"HS256\"]\n", "auth.algorithms"),
        (
            "[auth.roles.ops]\npermissions = [\"embedings\"]\n",
            "auth.roles.ops.permissions",
        ),
        ("[auth]\ndefault_role = \"owner\"\n", "auth.default_role"),
        ("[http]\ntls_cert = \"/etc/cert.pem\"\n", "http.tls_key"),
    ];
    for (i, (toml, key)) in cases.iter().enumerate() {
        let file = temp_config(&format!("bad{i}"), toml);
        let (ok, _, stderr) = citadel(&["config", "check", "--config", &file], &[]);
        assert!(!ok, "{toml} accepted");
        assert!(
            stderr.contains(key),
            "error for {toml:?} should name {key}: {stderr}"
        );
    }
    let (ok, _, stderr) = citadel(
        &["config", "check"],
        &[("CITADEL_HTTP__BODY_LIMIT_BYTES", "lots")],
    );
    assert!(!ok && stderr.contains("body_limit_bytes"), "{stderr}");
    let (ok, _, stderr) = citadel(&["config", "check", "--config", "/nonexistent.toml"], &[]);
    assert!(!ok && stderr.contains("/nonexistent.toml"), "{stderr}");
}

/// The fleet's hosts set `CITADEL_HOME` and `CITADEL_ENV` for the service user: a `CITADEL_*`
/// variable that is no key is named in a warning and ignored, while a misspelt key inside a
/// section still fails, naming it.
#[test]
fn a_citadel_variable_that_is_no_key_is_named_and_ignored() {
    let (ok, _, stderr) = citadel(
        &["config", "check"],
        &[
            ("CITADEL_HOME", "/opt/citadel"),
            ("CITADEL_ENV", "development"),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("warning: CITADEL_HOME is not a configuration key"),
        "{stderr}"
    );
    assert!(!stderr.contains("CITADEL_ENV is not"), "{stderr}");
    let (ok, _, stderr) = citadel(
        &["config", "check"],
        &[("CITADEL_HTTP__ADRR", "127.0.0.1:1")],
    );
    assert!(!ok && stderr.contains("adrr"), "{stderr}");
}

#[test]
fn a_missing_model_is_one_clear_line_with_the_fix() {
    let file = temp_config(
        "nomodel",
        "[models.all-minilm]\ndir = \"/nonexistent/all-minilm\"\n",
    );
    let args = serve_args(&file);
    let started = std::time::Instant::now();
    let (ok, _, stderr) = citadel(&args, &[]);
    assert!(!ok);
    assert!(started.elapsed() < Duration::from_secs(30));
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(
        line.contains("/nonexistent/all-minilm") && line.contains("run `make models`"),
        "{stderr}"
    );
}

#[test]
fn the_kubernetes_configmap_holds_a_valid_configuration() {
    let yaml = std::fs::read_to_string("deploy/kubernetes/configmap.yaml").expect("configmap");
    let body: String = yaml
        .lines()
        .skip_while(|l| !l.contains("citadel.toml: |"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    assert!(body.contains("[http]"), "found the embedded TOML");
    let file = temp_config("configmap", &body);
    let (ok, _, stderr) = citadel(&["config", "check", "--config", &file], &[]);
    assert!(ok, "deploy/kubernetes/configmap.yaml: {stderr}");
}

#[test]
fn more_input_tokens_than_the_model_has_positions_is_refused() {
    let file = temp_config(
        "positions",
        "[models.all-minilm]\nmax_input_tokens = 1024\nmax_batch_tokens = 1024\n",
    );
    let args = serve_args(&file);
    let (ok, _, stderr) = citadel(&args, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("models.all-minilm.max_input_tokens") && stderr.contains("512"),
        "{stderr}"
    );
}
