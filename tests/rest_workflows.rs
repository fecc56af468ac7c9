//! `/api/v1/workflows` through the REST edge: submit, poll, cancel, retry and list durable
//! workflows run by the server's own worker (each server on a SQLite file of its own), over
//! real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

/// A workflow that should finish at once gets this long to do so on a busy machine.
const WAIT: Duration = Duration::from_secs(10);
const FINISHED: [&str; 3] = ["SUCCESS", "FAILURE", "CANCELLED"];

/// POSTs `body` (JSON, or nothing) to `path` with extra `headers`; returns status, headers and
/// the parsed body (null if not JSON).
async fn post(
    server: &Server,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = http().post(server.url(path));
    if let Some(body) = body {
        request = request.json(body);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json::<Value>().await.unwrap_or(Value::Null),
    )
}

/// Submits `body`; asserts 201 and returns the workflow.
async fn submit(server: &Server, body: &Value) -> Value {
    let (status, headers, workflow) = post(server, "/api/v1/workflows", Some(body), &[]).await;
    assert_eq!(status, 201, "{workflow}");
    let id = workflow["id"].as_str().expect("id");
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/workflows/{id}").as_str())
    );
    workflow
}

fn id(workflow: &Value) -> String {
    workflow["id"].as_str().expect("id").to_string()
}

/// Polls the workflow until it is in `state`; fails on timeout or on another finished state.
async fn wait_for(server: &Server, id: &str, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = get_json(server, &format!("/api/v1/workflows/{id}")).await;
        assert_eq!(status, 200, "{body}");
        let now = body["state"].as_str().expect("state");
        if now == state {
            return body;
        }
        assert!(
            !FINISHED.contains(&now),
            "workflow {id} finished {now}, expected {state}: {body}"
        );
        assert!(
            Instant::now() < deadline,
            "workflow {id} not {state} within {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An RFC 3339 UTC time, as prost's `Timestamp` prints it.
fn assert_time(value: &Value, what: &str) {
    let text = value.as_str().unwrap_or_else(|| panic!("{what}: {value}"));
    assert!(
        text.len() >= 20 && text.as_bytes()[10] == b'T' && text.ends_with('Z'),
        "{what} is not RFC 3339: {text}"
    );
}

fn assert_code(status: u16, body: &Value, expected: u16, code: &str, param: Option<&str>) {
    let error = assert_openai_error(status, body, expected);
    assert_eq!(error["code"], json!(code), "{body}");
    assert_eq!(error["param"], json!(param), "{body}");
}

#[tokio::test]
async fn noop_and_sleep_run_to_success_with_retries() {
    let server = Server::start();

    let queued = submit(&server, &json!({"kind": "noop"})).await;
    assert_eq!(queued["object"], "workflow");
    assert_eq!(queued["kind"], "noop");
    assert_eq!(queued["params"], json!({}), "missing params are {{}}");
    assert_eq!(queued["state"], "PENDING");
    assert_eq!(queued["attempts"], 0);
    assert_eq!(queued["result"], Value::Null);
    assert_eq!(queued["idempotency_key"], Value::Null);
    assert_eq!(queued["cancel_requested"], false);
    assert_eq!(queued["finished_at"], Value::Null);
    assert_time(&queued["created_at"], "created_at");
    assert_time(&queued["run_at"], "run_at");

    let done = wait_for(&server, &id(&queued), "SUCCESS", WAIT).await;
    assert_eq!(done["id"], queued["id"]);
    assert_eq!(done["result"], json!({}));
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["error"], Value::Null);
    assert_eq!(done["max_attempts"], 3, "the server's default");
    assert_eq!(done["retry"]["max_attempts"], 3);
    assert_eq!(done["time_limit_ms"], 1_800_000, "the server's default");
    assert!(
        done["worker"].as_str().is_some_and(|w| !w.is_empty()),
        "{done}"
    );
    for key in ["started_at", "finished_at", "updated_at", "expires_at"] {
        assert_time(&done[key], key);
    }

    // Parameters, priority and limits travel through Struct and back unchanged.
    let params = json!({"a": 1, "x": 0.5, "nested": {"b": [true, null, "s"]}});
    let echoed = submit(
        &server,
        &json!({"kind": "noop", "params": params, "priority": 5, "time_limit_ms": 60000,
                "retry": {"max_attempts": 1}}),
    )
    .await;
    assert_eq!(echoed["params"], params);
    assert_eq!(echoed["priority"], 5);
    assert_eq!(echoed["time_limit_ms"], 60000);
    assert_eq!(echoed["max_attempts"], 1);

    // The first attempt fails on purpose; the retry, after a short backoff, succeeds.
    let flaky = submit(
        &server,
        &json!({"kind": "sleep", "params": {"ms": 100, "fail_attempts": 1},
                "retry": {"initial_backoff_ms": 10, "max_backoff_ms": 20}}),
    )
    .await;
    assert_eq!(flaky["retry"]["initial_backoff_ms"], 10);
    assert_eq!(flaky["retry"]["max_backoff_ms"], 20);
    let done = wait_for(&server, &id(&flaky), "SUCCESS", WAIT).await;
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["result"], json!({"slept_ms": 100, "attempt": 2}));

    // A finished workflow can be neither cancelled nor retried.
    let path = format!("/api/v1/workflows/{}", id(&queued));
    let (status, _, body) = post(&server, &format!("{path}/cancel"), None, &[]).await;
    assert_code(status, &body, 409, "workflow_state_conflict", None);
    let (status, _, body) = post(&server, &format!("{path}/retry"), None, &[]).await;
    assert_code(status, &body, 409, "workflow_state_conflict", None);
    let (status, body) = get_json(&server, &path).await;
    assert_eq!((status, &body["state"]), (200, &json!("SUCCESS")), "{body}");
}

#[tokio::test]
async fn idempotency_keys_return_the_first_workflow() {
    let server = Server::start();
    let path = "/api/v1/workflows";

    let body = json!({"kind": "noop", "params": {"n": 1}, "idempotency_key": "order-7"});
    let first = submit(&server, &body).await;
    assert_eq!(first["idempotency_key"], "order-7");
    let (status, headers, again) = post(&server, path, Some(&body), &[]).await;
    assert_eq!(status, 200, "an existing workflow is not created: {again}");
    assert!(headers.get("location").is_none());
    assert_eq!(again["id"], first["id"]);

    // The same key with other parameters is a conflict, not a silent reuse.
    let other = json!({"kind": "noop", "params": {"n": 2}, "idempotency_key": "order-7"});
    let (status, _, error) = post(&server, path, Some(&other), &[]).await;
    assert_code(
        status,
        &error,
        409,
        "idempotency_key_reused",
        Some("idempotency_key"),
    );

    // The Idempotency-Key header works like the body field...
    let header = [("Idempotency-Key", "order-8")];
    let plain = json!({"kind": "noop"});
    let (status, _, by_header) = post(&server, path, Some(&plain), &header).await;
    assert_eq!(status, 201, "{by_header}");
    assert_eq!(by_header["idempotency_key"], "order-8");
    assert_ne!(by_header["id"], first["id"]);
    let (status, _, again) = post(&server, path, Some(&plain), &header).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], by_header["id"]);
    let same = json!({"kind": "noop", "idempotency_key": "order-8"});
    let (status, _, again) = post(&server, path, Some(&same), &header).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], by_header["id"]);

    // ...and both at once must agree.
    let differs = json!({"kind": "noop", "idempotency_key": "order-9"});
    let (status, _, error) = post(&server, path, Some(&differs), &header).await;
    let error = assert_openai_error(status, &error, 400);
    assert_eq!(error["param"], "idempotency_key", "{error}");

    // Without a key, two submits are two workflows.
    let (status, _, a) = post(&server, path, Some(&plain), &[]).await;
    let (_, _, b) = post(&server, path, Some(&plain), &[]).await;
    assert_eq!(status, 201);
    assert_ne!(a["id"], b["id"]);
}

#[tokio::test]
async fn bad_requests_and_unknown_ids_get_openai_errors() {
    let server = Server::start();
    let path = "/api/v1/workflows";

    let cases: Vec<(Value, Option<&str>)> = vec![
        (json!({"kind": "no-such-kind"}), Some("kind")),
        (json!({"params": {}}), Some("kind")),
        (json!({"kind": "noop", "params": [1, 2]}), Some("params")),
        (json!({"kind": "noop", "params": "x"}), Some("params")),
        (json!({"kind": "noop", "params": null}), Some("params")),
        (
            json!({"kind": "sleep", "params": {"ms": "long"}}),
            Some("params"),
        ),
        (
            json!({"kind": "noop", "not_before": "tomorrow"}),
            Some("not_before"),
        ),
        // Unknown fields are refused, at the top and inside `retry`.
        (json!({"kind": "noop", "colour": "red"}), None),
        (json!({"kind": "noop", "retry": {"attempts": 3}}), None),
        (json!({"kind": "noop", "priority": "high"}), None),
    ];
    for (body, param) in cases {
        let (status, _, error) = post(&server, path, Some(&body), &[]).await;
        let error = assert_openai_error(status, &error, 400);
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        if let Some(param) = param {
            assert_eq!(error["param"], param, "{body}: {error}");
        }
    }

    let response = http()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(r#"{"kind": "noop","#)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    assert_openai_error(status, &body, 400);

    // Nothing of the above was queued.
    let (status, list) = get_json(&server, path).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"], json!([]), "{list}");

    let unknown = "/api/v1/workflows/00000000-0000-4000-8000-000000000000";
    let (status, body) = get_json(&server, unknown).await;
    assert_code(status, &body, 404, "workflow_not_found", Some("id"));
    for action in ["cancel", "retry"] {
        let (status, _, body) = post(&server, &format!("{unknown}/{action}"), None, &[]).await;
        assert_code(status, &body, 404, "workflow_not_found", Some("id"));
    }

    for (query, param) in [
        ("state=DONE", "state"),
        ("state=PENDING,nope", "state"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("colour=red", "query"),
    ] {
        let (status, body) = get_json(&server, &format!("{path}?{query}")).await;
        let error = assert_openai_error(status, &body, 400);
        assert_eq!(error["param"], param, "{query}: {body}");
    }
    let (status, body) = get_json(&server, &format!("{path}?page_token=garbage")).await;
    assert_openai_error(status, &body, 400);
}

#[tokio::test]
async fn cancel_stops_a_running_workflow_and_retry_runs_a_cancelled_one() {
    // One task at a time, so a second workflow waits in the queue behind the first.
    let server = Server::with_config("[workflows]\nconcurrency = 1\n");

    let long = submit(
        &server,
        &json!({"kind": "sleep", "params": {"ms": 10000, "steps": 100}}),
    )
    .await;
    let long_id = id(&long);
    wait_for(&server, &long_id, "STARTED", WAIT).await;

    let queued = submit(&server, &json!({"kind": "noop"})).await;
    let queued_id = id(&queued);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, body) = get_json(&server, &format!("/api/v1/workflows/{queued_id}")).await;
    assert_eq!(
        body["state"], "PENDING",
        "the only worker slot is busy: {body}"
    );

    // Not started: cancelled at once.
    let cancel = format!("/api/v1/workflows/{queued_id}/cancel");
    let (status, _, body) = post(&server, &cancel, None, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "CANCELLED");
    assert_time(&body["finished_at"], "finished_at");

    // Running: asked to stop (202), then CANCELLED long before its 10 s sleep ends.
    let asked = Instant::now();
    let cancel = format!("/api/v1/workflows/{long_id}/cancel");
    let (status, _, body) = post(&server, &cancel, None, &[]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "STARTED");
    assert_eq!(body["cancel_requested"], true);
    let cancelled = wait_for(&server, &long_id, "CANCELLED", Duration::from_secs(5)).await;
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(cancelled["error"].is_string(), "{cancelled}");
    assert_eq!(cancelled["result"], Value::Null);
    // A finished workflow has nothing to cancel: CANCELLED answers like SUCCESS and FAILURE.
    let (status, _, body) = post(&server, &cancel, None, &[]).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "workflow_state_conflict", "{body}");

    // Retried, the cancelled noop is queued afresh and runs now that the slot is free.
    let retry = format!("/api/v1/workflows/{queued_id}/retry");
    let (status, _, body) = post(&server, &retry, None, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "PENDING");
    assert_eq!(body["attempts"], 0);
    assert_eq!(body["cancel_requested"], false);
    assert_eq!(body["finished_at"], Value::Null);
    let done = wait_for(&server, &queued_id, "SUCCESS", WAIT).await;
    assert_eq!(done["result"], json!({}));
    assert_eq!(done["attempts"], 1);

    let (status, _, body) = post(&server, &retry, None, &[]).await;
    assert_code(status, &body, 409, "workflow_state_conflict", None);
}

#[tokio::test]
async fn list_filters_by_state_and_kind_and_pages_through_everything() {
    let server = Server::start();
    let path = "/api/v1/workflows";

    // Not before the year 2999: it stays queued while the worker runs everything after it.
    let later = submit(
        &server,
        &json!({"kind": "sleep", "params": {"ms": 1}, "not_before": "2999-01-01T00:00:00Z"}),
    )
    .await;
    assert!(
        later["run_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2999-01-01T00:00:00")),
        "{later}"
    );
    let mut noops = Vec::new();
    for n in 0..5 {
        noops.push(id(&submit(
            &server,
            &json!({"kind": "noop", "params": {"n": n}}),
        )
        .await));
    }
    for noop in &noops {
        wait_for(&server, noop, "SUCCESS", WAIT).await;
    }
    let (_, body) = get_json(&server, &format!("{path}/{}", id(&later))).await;
    assert_eq!(body["state"], "PENDING", "{body}");
    assert_eq!(body["started_at"], Value::Null);

    // limit=2 walks 2 + 2 + 1, each workflow once.
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let query = match &token {
            Some(t) => format!("{path}?state=SUCCESS&limit=2&page_token={t}"),
            None => format!("{path}?state=SUCCESS&limit=2"),
        };
        let (status, page) = get_json(&server, &query).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["object"], "list");
        let data = page["data"].as_array().expect("data");
        sizes.push(data.len());
        for workflow in data {
            assert_eq!(workflow["state"], "SUCCESS");
            seen.push(id(workflow));
        }
        assert_eq!(
            page["has_more"],
            page["next_page_token"].is_string(),
            "{page}"
        );
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_string()),
            None => break,
        }
        assert!(sizes.len() < 10, "paging does not end: {sizes:?}");
    }
    assert_eq!(sizes, [2, 2, 1]);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "duplicates across pages: {seen:?}"
    );
    assert_eq!(unique, noops.iter().collect::<HashSet<_>>());

    let (_, page) = get_json(&server, &format!("{path}?state=pending")).await;
    let ids: Vec<String> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(id)
        .collect();
    assert_eq!(ids, [id(&later)]);
    assert_eq!(page["has_more"], false);
    assert_eq!(page["next_page_token"], Value::Null);

    let (_, page) = get_json(&server, &format!("{path}?state=success,Pending&kind=sleep")).await;
    let ids: Vec<String> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(id)
        .collect();
    assert_eq!(ids, [id(&later)]);

    // Everything, newest first.
    let (_, page) = get_json(&server, path).await;
    let ids: Vec<String> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(id)
        .collect();
    let mut expected: Vec<String> = std::iter::once(id(&later)).chain(noops).collect();
    expected.reverse();
    assert_eq!(ids, expected);
}
