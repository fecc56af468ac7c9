//! `citadel backup` under load and `citadel restore` into a fresh process: every workflow and
//! every vector point committed before the backup began is there after; a damaged archive
//! and a target holding data are refused with the reason.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};

use super::{citadel, common};
use common::Server;

async fn call(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = common::http().request(method, server.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn vector(seed: usize) -> Vec<f32> {
    (0..384)
        .map(|i| ((seed * 31 + i * 7) % 97) as f32 / 97.0 + 0.01)
        .collect()
}

/// A process's state: its SQLite file and its vector directory.
struct State {
    database: String,
    vectors: String,
}

impl State {
    fn fresh(what: &str) -> State {
        let dir = common::scratch_dir(what);
        State {
            database: format!("sqlite://{}?mode=rwc", dir.join("citadel.db").display()),
            vectors: dir.join("vectors").display().to_string(),
        }
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("CITADEL_DATABASE__URL", self.database.as_str()),
            ("CITADEL_VECTORS__PATH", self.vectors.as_str()),
        ]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_everything_committed_before_it_began() {
    let source = State::fresh("backup-source");
    let server = Server::with_env("", &source.env());
    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/collections",
        Some(json!({"name": "docs", "model": "all-minilm"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let points: Vec<Value> = (0..40)
        .map(|i| json!({"id": format!("d{i}"), "vector": vector(i), "payload": {"i": i}}))
        .collect();
    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/collections/docs/points",
        Some(json!({"points": points})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Submits go on all through the backup; each id is kept with whether its 201 came
    // before the backup started.
    let accepted: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (accepted, started, stop) = (accepted.clone(), started.clone(), stop.clone());
        let url = server.url("/api/v1/workflows");
        tokio::spawn(async move {
            let http = common::http();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let body = json!({"kind": "noop", "params": {"i": i}});
                let response = http.post(&url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 201);
                let before = !started.load(std::sync::atomic::Ordering::Acquire);
                let created: Value = response.json().await.unwrap();
                let id = created["id"].as_str().unwrap().to_string();
                accepted.lock().unwrap().push((id, before));
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let archive = common::scratch_dir("backup-file").join("citadel.tar");
    let archive_arg = archive.display().to_string();
    started.store(true, std::sync::atomic::Ordering::Release);
    let env = source.env();
    let (ok, stdout, stderr) = {
        let archive_arg = archive_arg.clone();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            citadel(&["backup", "--to", &archive_arg], &env)
        })
        .await
        .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    load.await.unwrap();
    assert!(ok, "backup failed:\n{stdout}{stderr}");
    assert!(
        stderr.contains("backup written"),
        "progress on stderr: {stderr}"
    );
    drop(server);
    let accepted = accepted.lock().unwrap().clone();
    let before: Vec<&String> = accepted
        .iter()
        .filter(|(_, b)| *b)
        .map(|(id, _)| id)
        .collect();
    assert!(
        before.len() >= 5,
        "load ran before the backup: {}",
        before.len()
    );
    assert!(accepted.iter().any(|(_, b)| !b), "and during it");

    // Into a fresh place, then a fresh process on it.
    let target = State::fresh("backup-target");
    let (ok, stdout, stderr) = citadel(&["restore", "--from", &archive_arg], &target.env());
    assert!(ok, "restore failed:\n{stdout}{stderr}");
    assert!(stderr.contains("restore done"), "{stderr}");
    let restored = Server::with_env("", &target.env());
    for id in &before {
        let (status, body) = call(&restored, "GET", &format!("/api/v1/workflows/{id}"), None).await;
        assert_eq!(
            status, 200,
            "workflow {id} accepted before the backup began: {body}"
        );
    }
    let (status, docs) = call(&restored, "GET", "/api/v1/collections/docs", None).await;
    assert_eq!(status, 200, "{docs}");
    assert_eq!(docs["points_count"], 40, "{docs}");
    // Payloads came back with the points: a filter on one finds it.
    let filter = json!({"filter": {"must": [{"key": "i", "match": {"value": 7}}]}});
    let (status, counted) = call(
        &restored,
        "POST",
        "/api/v1/collections/docs/count",
        Some(filter),
    )
    .await;
    assert_eq!(status, 200, "{counted}");
    assert_eq!(counted["count"], 1, "{counted}");
    drop(restored);

    // A target that holds data is not overwritten without --force.
    let (ok, _, stderr) = citadel(&["restore", "--from", &archive_arg], &target.env());
    assert!(!ok && stderr.contains("--force"), "{stderr}");
    let (ok, _, stderr) = citadel(
        &["restore", "--from", &archive_arg, "--force"],
        &target.env(),
    );
    assert!(ok, "{stderr}");

    // A cut-off archive is refused, and nothing is touched.
    let bytes = std::fs::read(&archive).unwrap();
    let cut = archive.with_extension("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let empty = State::fresh("backup-empty");
    let (ok, _, stderr) = citadel(
        &["restore", "--from", &cut.display().to_string()],
        &empty.env(),
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("cut short")
            || stderr.contains("incomplete")
            || stderr.contains("not an archive"),
        "{stderr}"
    );
    assert!(!std::path::Path::new(&empty.vectors).join("docs").exists());
}
