//! SIGHUP: `log.level` applies in the running process; other changed keys are named as
//! needing a restart; a configuration that no longer loads is refused and the process goes on.

use std::time::{Duration, Instant};

use crate::common::*;

/// Waits until the server's logs hold `needle` (after `from` bytes of them); returns the rest.
async fn wait_log(server: &Server, from: usize, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = server.logs();
        if let Some(tail) = logs.get(from..).filter(|t| t.contains(needle)) {
            return tail.to_string();
        }
        assert!(Instant::now() < deadline, "no `{needle}` in:\n{logs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `toml` as the server's configuration file, sends SIGHUP, and waits for `needle`.
async fn reload(server: &Server, toml: &str, needle: &str) -> String {
    std::fs::write(&server.config, toml).unwrap();
    let from = server.logs().len();
    server.signal("HUP");
    wait_log(server, from, needle).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_log_level_and_names_what_needs_a_restart() {
    // RUST_LOG empty: the level comes from the file, as on the fleet's hosts.
    let server = Server::with_env("[log]\nlevel = \"info\"\n", &[("RUST_LOG", "")]);
    let get = |path: &str| http().get(server.url(path)).send();
    // At info a request logs an INFO line (what the quiet check below must not see).
    let from = server.logs().len();
    assert_eq!(get("/v1/models").await.unwrap().status(), 200);
    wait_log(&server, from, "\"INFO\"").await;

    let tail = reload(
        &server,
        "[log]\nlevel = \"warn\"\n[cache]\nttl_secs = 60\n",
        "take effect only after a restart",
    )
    .await;
    // Exactly the key that needs a restart (log.level applied, so not listed), no value.
    let line = tail
        .lines()
        .find(|l| l.contains("take effect only after a restart"))
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["fields"]["keys"], "cache.ttl_secs", "{line}");
    // Now at warn: the request's INFO line is gone.
    let from = server.logs().len();
    assert_eq!(get("/v1/models").await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet = server.logs()[from..].to_string();
    assert!(!quiet.contains("\"INFO\""), "INFO lines at warn: {quiet}");

    // A file that no longer loads is refused, naming the key; the server keeps serving.
    let tail = reload(
        &server,
        "[log]\nlevel = \"info\"\nnot_a_key = 1\n",
        "did not load",
    )
    .await;
    assert!(tail.contains("not_a_key"), "{tail}");
    assert_eq!(get("/health/").await.unwrap().status(), 200);

    // Back to info: the change shows, and INFO lines return.
    let tail = reload(
        &server,
        "[log]\nlevel = \"info\"\n[cache]\nttl_secs = 60\n",
        "log.level applied",
    )
    .await;
    assert!(
        tail.contains("\"from\":\"warn\"") && tail.contains("\"to\":\"info\""),
        "{tail}"
    );
}
