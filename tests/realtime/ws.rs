//! `/ws/orchestration`: subscribe/ack, the snapshot, workflow events written by another
//! process's worker, control messages, bad frames, shutdown, and auth.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

use crate::{common, connect, next_json, next_of, send, submit, subscribe};

/// Follows `id`'s events until SUCCESS; checks versions only grow; returns the final one.
async fn until_success(socket: &mut crate::Socket, id: &str) -> Value {
    let mut version = 0;
    loop {
        let event = next_of(socket, "workflow").await;
        let w = &event["workflow"];
        if w["id"] != id {
            continue;
        }
        let v = w["version"].as_u64().unwrap();
        assert!(v >= version, "versions go back: {v} after {version}");
        version = v;
        if w["state"] == "SUCCESS" {
            return w.clone();
        }
        assert!(
            ["PENDING", "STARTED"].contains(&w["state"].as_str().unwrap()),
            "{w}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_events_from_another_process_reach_subscribers_with_the_whole_record() {
    // The API process runs no worker: the events come from `citadel worker` on the same
    // PostgreSQL database, through NOTIFY.
    let db = common::pg::Database::create();
    let url = db.url.clone();
    let env = [("CITADEL_DATABASE__URL", url.as_str())];
    let server = common::Server::with_env("[workflows]\nworker_enabled = false\n", &env);
    let (mut worker, logs, lines) = common::spawn(&["worker", "--concurrency", "2"], &env);
    tokio::task::block_in_place(|| {
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(60)) {
            if line.contains("citadel worker ready") {
                return;
            }
        }
        panic!("the worker did not start:\n{}", logs.lock().unwrap());
    });
    let (mut socket, welcome, _) = connect(&server, &[], &[]).await.unwrap();
    assert_eq!(
        welcome["topics"],
        json!(["workflows", "health", "models", "metrics"])
    );
    subscribe(&mut socket, &["workflows"]).await;
    // After the (empty) snapshot: in sync from here on.
    let synced = next_json(&mut socket).await;
    assert_eq!(
        synced,
        json!({"type": "synced", "topic": "workflows", "snapshot": 0})
    );

    let big = 9_007_199_254_740_993_u64; // 2^53 + 1: a Struct would round it
    let body = json!({"kind": "sleep", "params": {"ms": 300, "steps": 3, "tag": big}});
    let submitted = submit(&server, &body, None).await;
    let id = submitted["id"].as_str().unwrap();
    let done = until_success(&mut socket, id).await;
    // The same fields as GET /api/v1/workflows/{id}, the result included.
    let got = common::get_json(&server, &format!("/api/v1/workflows/{id}"))
        .await
        .1;
    assert_eq!(done, got);
    assert_eq!(
        done["params"]["tag"],
        json!(big),
        "params are carried losslessly"
    );
    assert!(done["worker"].as_str().unwrap().contains('-'), "{done}");

    // A second subscriber gets the finished workflow in its snapshot.
    let (mut late, _, _) = connect(&server, &[], &[]).await.unwrap();
    subscribe(&mut late, &["workflows"]).await;
    let first = next_of(&mut late, "workflow").await;
    assert_eq!(first["snapshot"], true, "{first}");
    assert_eq!(first["workflow"]["id"], id);
    assert_eq!(first["workflow"]["state"], "SUCCESS");
    let _ = worker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_messages_answer_with_the_workflow_or_an_openai_error() {
    let server = common::Server::start();
    let (mut socket, _, _) = connect(&server, &[], &[]).await.unwrap();
    let submit = json!({"type": "submit_workflow", "id": "s1",
        "workflow": {"kind": "sleep", "params": {"ms": 20000, "steps": 2}}});
    send(&mut socket, &submit).await;
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["type"], "result", "{reply}");
    assert_eq!(reply["id"], "s1");
    assert_eq!(reply["data"]["created"], true);
    let id = reply["data"]["id"].as_str().unwrap().to_string();
    // The queue (WorkflowService.GetQueueDepth over REST) holds it, pending or started.
    let (status, queue) = common::get_json(&server, "/api/v1/workflows/queue?kind=sleep").await;
    assert_eq!(status, 200, "{queue}");
    let unfinished = ["pending", "started", "retry"].map(|s| queue[s].as_u64().unwrap());
    assert_eq!(unfinished.iter().sum::<u64>(), 1, "{queue}");
    let (status, body) = common::get_json(&server, "/api/v1/workflows/queue?colour=red").await;
    common::assert_openai_error(status, &body, 400);

    send(
        &mut socket,
        &json!({"type": "get_workflow", "id": 7, "workflow_id": id}),
    )
    .await;
    let reply = next_json(&mut socket).await;
    assert_eq!(
        (reply["type"].as_str(), &reply["id"]),
        (Some("result"), &json!(7))
    );
    assert_eq!(reply["data"]["kind"], "sleep");

    send(
        &mut socket,
        &json!({"type": "cancel_workflow", "id": "c1", "workflow_id": id}),
    )
    .await;
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["type"], "result", "{reply}");
    assert_eq!(reply["data"]["cancel_requested"], true);
    // Retrying needs it finished: wait for CANCELLED.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let w = common::get_json(&server, &format!("/api/v1/workflows/{id}"))
            .await
            .1;
        if w["state"] == "CANCELLED" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never cancelled: {w}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(
        &mut socket,
        &json!({"type": "retry_workflow", "id": "r1", "workflow_id": id}),
    )
    .await;
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["type"], "result", "{reply}");
    assert_eq!(reply["data"]["state"], "PENDING");

    // Errors carry OpenAI's fields and the message's id; the socket stays open.
    let missing = json!({"type": "get_workflow", "id": "g2", "workflow_id": "no-such-workflow"});
    send(&mut socket, &missing).await;
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["id"], "g2");
    assert_eq!(reply["error"]["code"], "workflow_not_found");
    assert_eq!(reply["error"]["type"], "invalid_request_error");
    let bad = json!({"type": "submit_workflow", "id": "s2", "workflow": {"kind": "no_such_kind"}});
    send(&mut socket, &bad).await;
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["error"]["param"], "kind");
    send(&mut socket, &json!({"type": "ping", "id": "p"})).await;
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "pong", "id": "p"})
    );

    // A burst of control calls past the 16 a socket may have in flight: every one is
    // answered, with its result or a 429-style refusal naming the limit, and nothing hangs.
    // The first 16 always find a permit; the socket reads the rest far faster than the calls
    // finish (about 22 of 40 were refused in every run here).
    for i in 0..40 {
        let get = json!({"type": "get_workflow", "id": format!("b{i}"), "workflow_id": id});
        send(&mut socket, &get).await;
    }
    let mut answered = std::collections::HashSet::new();
    let mut refused = 0;
    while answered.len() < 40 {
        let reply = next_json(&mut socket).await;
        match reply["type"].as_str() {
            Some("result") => assert_eq!(reply["data"]["id"], id.as_str(), "{reply}"),
            _ => {
                assert_eq!(reply["error"]["code"], "too_many_in_flight", "{reply}");
                assert_eq!(reply["error"]["type"], "requests", "{reply}");
                refused += 1;
            }
        }
        assert!(
            answered.insert(reply["id"].as_str().unwrap().to_string()),
            "{reply}"
        );
    }
    assert!((1..=24).contains(&refused), "{refused} of 40 refused");

    // A message near the 64 KiB default limit is read whole, however many reads it takes.
    let pad = "x".repeat(60 * 1024);
    let large = json!({"type": "submit_workflow", "id": "big",
        "workflow": {"kind": "noop", "params": {"pad": pad}}});
    send(&mut socket, &large).await;
    let reply = next_json(&mut socket).await;
    assert_eq!(
        (reply["type"].as_str(), &reply["id"]),
        (Some("result"), &json!("big"))
    );
    assert_eq!(
        reply["data"]["params"]["pad"].as_str().map(str::len),
        Some(pad.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_oversized_frames() {
    let server = common::Server::with_config("[ws]\nmax_message_bytes = 1024\n");
    let (mut socket, welcome, _) = connect(&server, &[], &[]).await.unwrap();
    assert_eq!(welcome["max_message_bytes"], 1024);
    socket.send_text("{not json").await;
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["error"]["code"], "invalid_json", "{reply}");
    send(&mut socket, &json!({"type": "launch_rockets", "id": "x"})).await;
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["error"]["code"], "unknown_message_type", "{reply}");
    assert_eq!(reply["id"], "x");
    send(
        &mut socket,
        &json!({"type": "subscribe", "id": "t", "topics": ["weather"]}),
    )
    .await;
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["error"]["code"], "unknown_topic", "{reply}");
    send(&mut socket, &json!({"type": "cancel_workflow", "id": "m"})).await;
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["error"]["code"], "invalid_message", "{reply}");
    // Still open after all that.
    send(&mut socket, &json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut socket).await["type"], "pong");
    // Over the limit: closed with 1009.
    let big = json!({"type": "ping", "pad": "x".repeat(1500)});
    send(&mut socket, &big).await;
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::Size));
}

/// The close frame's code, reading past anything before it.
async fn close_code(socket: &mut crate::Socket) -> Option<CloseCode> {
    use futures_util::StreamExt;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a close within 5 s");
        match frame {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

trait SendText {
    async fn send_text(&mut self, text: &str);
}

impl SendText for crate::Socket {
    async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.send(Message::Text(text.to_string().into()))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_models_and_metrics_topics_push_snapshots() {
    let server = common::Server::with_config("[ws]\nmetrics_interval_ms = 200\n");
    let (mut socket, _, _) = connect(&server, &[], &[]).await.unwrap();
    subscribe(&mut socket, &["health", "models", "metrics"]).await;
    for _ in 0..3 {
        let _ = common::get_json(&server, "/v1/models").await;
    }
    // Each topic sends as it reads: in any order.
    let (mut health, mut models, mut metrics) = (None, None, Vec::new());
    while health.is_none() || models.is_none() || metrics.len() < 5 {
        let message = next_json(&mut socket).await;
        match message["type"].as_str().unwrap() {
            "health" => health = Some(message),
            "models" => models = Some(message),
            "metrics" => metrics.push(message),
            other => panic!("unexpected {other}: {message}"),
        }
    }
    let (health, models) = (health.unwrap(), models.unwrap());
    assert_eq!(health["health"]["status"], "ok", "{health}");
    assert!(health["health"]["components"]["models"].is_array());
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "all-minilm"),
        "{models}"
    );
    let mut saw_traffic = false;
    for m in &metrics {
        assert!(m["at_ms"].as_u64().unwrap() > 0);
        assert!(
            m["active_streams"].as_i64().unwrap() >= 1,
            "this socket: {m}"
        );
        assert!(m["workflows"]["pending"].is_u64(), "{m}");
        assert!(m["workflows"]["running"].is_u64(), "{m}");
        saw_traffic |= m["requests_per_second"].as_f64().unwrap() > 0.0;
    }
    assert!(saw_traffic, "the REST requests show in requests_per_second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_1001_without_holding_the_drain() {
    let mut server = common::Server::start();
    let (mut socket, _, _) = connect(&server, &[], &[]).await.unwrap();
    subscribe(&mut socket, &["workflows", "metrics"]).await;
    let started = std::time::Instant::now();
    server.sigterm();
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::Away));
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert!(status.is_some_and(|s| s.success()), "{}", server.logs());
    // The default drain allows 30 s; an open socket must not use it.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_by_header_or_subprotocol_and_refused_before_the_upgrade() {
    let database = common::sqlite_url();
    let env = [("CITADEL_DATABASE__URL", database.as_str())];
    let server = common::Server::with_env("[auth]\nmode = \"required\"\n", &env);
    let key = common::create_key(&database, &["--name", "ws-test", "--role", "member"]);

    // No credential: 401 before any upgrade (a browser can tell "needs a key" from "down").
    let refused = connect(&server, &[], &[]).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected 401, got {:?}", other.map(|(_, w, _)| w)),
    }
    let plain = common::http()
        .get(server.url("/ws/orchestration"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 401);

    let header = format!("Bearer {key}");
    let (mut socket, welcome, _) = connect(&server, &[("authorization", &header)], &[])
        .await
        .unwrap();
    assert!(
        welcome["principal"]["id"]
            .as_str()
            .unwrap()
            .starts_with("key:"),
        "{welcome}"
    );
    subscribe(&mut socket, &["workflows"]).await;
    let mine = submit(&server, &json!({"kind": "noop"}), Some(&key)).await;
    let event = next_of(&mut socket, "workflow").await;
    assert_eq!(event["workflow"]["id"], mine["id"]);

    // Browsers: the token as a subprotocol, beside citadel.v1 (the one chosen).
    let protocol = format!("bearer.{key}");
    let (_, _, chosen) = connect(&server, &[], &["citadel.v1", &protocol])
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("citadel.v1"));
    let (_, _, chosen) = connect(&server, &[], &[&protocol]).await.unwrap();
    assert_eq!(chosen.as_deref(), Some(protocol.as_str()));
    let wrong = connect(&server, &[], &["bearer.ck_000000000000_nope"]).await;
    assert!(wrong.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_whose_token_expires_closes_with_4401_unless_refreshed() {
    use common::jwt::{ISSUER, RsaKey, claims, now};
    let key = RsaKey::generate("ws-expiry");
    let config = format!(
        "[auth]\nmode = \"required\"\npublic_key_pem = '''{}'''\nissuer = \"{ISSUER}\"\n\
         default_role = \"member\"\nleeway_secs = 0\n",
        key.public_pem
    );
    let server = common::Server::with_config(&config);
    let token = |ttl: u64| {
        let mut c = claims("user_ws", None);
        c["exp"] = (now() + ttl).into();
        key.sign(&c)
    };
    let short = format!("Bearer {}", token(2));
    let (mut expiring, welcome, _) = connect(&server, &[("authorization", &short)], &[])
        .await
        .unwrap();
    assert_eq!(welcome["principal"]["id"], "user_ws");
    let (mut refreshed, _, _) = connect(&server, &[("authorization", &short)], &[])
        .await
        .unwrap();
    // A bad token is refused and changes nothing.
    send(
        &mut refreshed,
        &json!({"type": "auth", "id": "a0", "token": "not-a-token"}),
    )
    .await;
    let reply = next_json(&mut refreshed).await;
    assert_eq!(
        (reply["type"].as_str(), &reply["id"]),
        (Some("error"), &json!("a0")),
        "{reply}"
    );
    send(
        &mut refreshed,
        &json!({"type": "auth", "id": "a1", "token": token(60)}),
    )
    .await;
    let reply = next_json(&mut refreshed).await;
    assert_eq!(reply["type"], "result", "{reply}");

    assert_eq!(
        close_code(&mut expiring).await,
        Some(CloseCode::Library(4401))
    );
    // The refreshed one outlives the first token.
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(&mut refreshed, &json!({"type": "ping", "id": "still"})).await;
    assert_eq!(next_json(&mut refreshed).await["id"], "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_too_slow_for_the_feed_is_told_it_lagged_and_gets_a_fresh_snapshot() {
    let server = common::Server::with_config("[ws]\nsend_queue = 16\nfeed_buffer = 64\n");
    let (mut slow, _, _) = connect(&server, &[], &[]).await.unwrap();
    let (mut keeping_up, _, _) = connect(&server, &[], &[]).await.unwrap();
    subscribe(&mut slow, &["workflows"]).await;
    subscribe(&mut keeping_up, &["workflows"]).await;
    // Large records, so the sockets' kernel buffers fill long before the feed's 64.
    let pad = "x".repeat(8 * 1024);
    let n = 400;
    let reader = tokio::spawn(async move {
        let mut finished = std::collections::HashSet::new();
        while finished.len() < n {
            let event = next_json(&mut keeping_up).await;
            match event["type"].as_str() {
                Some("workflow") if event["workflow"]["state"] == "SUCCESS" => {
                    finished.insert(event["workflow"]["id"].as_str().unwrap().to_string());
                }
                // A reader starved of CPU on a loaded 2-core machine may fall behind too; it
                // is then told so like any other, which is not what this test is about.
                Some("lagged") => {
                    eprintln!("the reading consumer lagged as well (a loaded machine): {event}");
                    return;
                }
                _ => {}
            }
        }
    });
    for i in 0..n {
        submit(
            &server,
            &json!({"kind": "noop", "params": {"i": i, "pad": pad}}),
            None,
        )
        .await;
    }
    // The one that reads keeps up and misses nothing (the hub never waits for the slow one).
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    // The slow one: told how much it missed, then the current state again.
    let lagged = next_of(&mut slow, "lagged").await;
    assert!(lagged["missed"].as_u64().unwrap() > 0, "{lagged}");
    let after = next_of(&mut slow, "workflow").await;
    assert_eq!(after["snapshot"], true, "{after}");
}
