//! SIGHUP: `log.level`, the roles' limits and permissions, and a remote model's servers
//! apply in the running process; other changed keys are named as needing a restart; a
//! configuration that no longer loads is refused and the process goes on.

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

/// An embedding request with `key`: its status and its `x-ratelimit-limit-requests`, if any.
async fn embed_with(server: &Server, key: &str) -> (u16, Option<String>) {
    let response = http()
        .post(server.url("/v1/embeddings"))
        .bearer_auth(key)
        .json(&serde_json::json!({"model": MODEL, "input": "reloaded limits"}))
        .send()
        .await
        .unwrap();
    let limit = response
        .headers()
        .get("x-ratelimit-limit-requests")
        .map(|v| v.to_str().unwrap().to_string());
    (response.status().as_u16(), limit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_role_limits_and_permissions_to_the_next_request() {
    let database = sqlite_url();
    let env = [
        ("CITADEL_DATABASE__URL", database.as_str()),
        ("RUST_LOG", ""),
    ];
    let base = "[auth]\nmode = \"required\"\n";
    let server = Server::with_env(base, &env);
    // A key without limits of its own: its role's are the ones in force.
    let key = create_key(&database, &["--name", "reloaded", "--role", "member"]);
    assert_eq!(
        embed_with(&server, &key).await,
        (200, None),
        "unlimited at first"
    );

    let limited = format!("{base}[auth.roles.member]\nrpm = 2\n");
    // "configuration reloaded" is the last line of a reload that left nothing for a restart.
    let tail = reload(&server, &limited, "configuration reloaded").await;
    assert!(tail.contains("roles applied"), "{tail}");
    assert!(tail.contains("auth.roles.member"), "{tail}");
    assert!(
        !tail.contains("only after a restart"),
        "nothing waits: {tail}"
    );
    let two = Some("2".to_string());
    assert_eq!(embed_with(&server, &key).await, (200, two.clone()));
    assert_eq!(embed_with(&server, &key).await, (200, two));
    assert_eq!(
        embed_with(&server, &key).await.0,
        429,
        "the reloaded limit holds"
    );

    // Permissions too: a member that may only list models is refused embeddings.
    let narrowed = format!("{base}[auth.roles.member]\npermissions = [\"models:read\"]\n");
    reload(&server, &narrowed, "roles applied").await;
    assert_eq!(embed_with(&server, &key).await.0, 403);
    let models = http()
        .get(server.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);

    // A role table that does not validate is refused, naming the key; the last one stays.
    let broken = format!("{base}[auth.roles.member]\npermissions = [\"no-such-permission\"]\n");
    let tail = reload(&server, &broken, "SIGHUP").await;
    assert!(tail.contains("no-such-permission"), "{tail}");
    assert_eq!(embed_with(&server, &key).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_moves_a_remote_model_to_its_new_servers() {
    let (one, two) = (upstream::standin().await, upstream::standin().await);
    // No probes: every request a stand-in counts is an embedding request.
    let config = |url: &str, attempts: u32| {
        format!(
            "{}{}[cache]\nmode = \"off\"\n{}",
            upstream::NO_LOCAL_MODELS,
            upstream::upstream_section(0, attempts, 3),
            upstream::model_section("remote", "ollama", &[(url, 1)], "")
        )
    };
    let server = Server::with_env(&config(&one.url(), 2), &[("RUST_LOG", "")]);
    let texts = upstream::texts(1);
    assert_eq!(upstream::embed(&server, "remote", &texts).await.0, 200);
    assert_eq!(one.stats().requests, 1);

    let tail = reload(&server, &config(&two.url(), 2), "configuration reloaded").await;
    assert!(tail.contains("endpoints applied"), "{tail}");
    assert!(tail.contains("models.remote.endpoints"), "{tail}");
    assert!(
        !tail.contains("only after a restart"),
        "nothing waits: {tail}"
    );
    for _ in 0..3 {
        let (status, body) = upstream::embed(&server, "remote", &texts).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(one.stats().requests, 1, "the old server gets nothing more");
    assert_eq!(two.stats().requests, 3, "the new one gets every request");
    let (_, health) = get_json(&server, "/health/detailed").await;
    let remote = health["components"]["models"]
        .as_array()
        .and_then(|models| models.iter().find(|m| m["name"] == "remote"))
        .unwrap_or_else(|| panic!("no model `remote` in {health}"));
    let urls: Vec<&str> = remote["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("no endpoints in {health}"))
        .iter()
        .filter_map(|e| e["url"].as_str())
        .collect();
    assert_eq!(urls, [two.url().as_str()], "{health}");

    // The retry policy is not swapped: it is named as needing a restart, and the
    // endpoints stay where they are.
    let tail = reload(&server, &config(&two.url(), 3), "only after a restart").await;
    assert!(tail.contains("upstream.retry.max_attempts"), "{tail}");
    assert_eq!(upstream::embed(&server, "remote", &texts).await.0, 200);
    assert_eq!(two.stats().requests, 4);
}
