//! `citadel.v1.WorkflowService` over gRPC, the way internal services use it, on both stores:
//! the embedded SQLite file and PostgreSQL (a fresh database per test). Each scenario runs on
//! both; the multi-process scenarios (kill -9, two workers, database restart) are in
//! `workflow_durability.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use citadel_proto::{
    json,
    v1::{
        CancelWorkflowRequest, GetWorkflowRequest, ListWorkflowsRequest, RetryPolicy,
        SubmitWorkflowRequest, WatchWorkflowsRequest, Workflow, WorkflowEvent, WorkflowState,
        workflow_service_client::WorkflowServiceClient,
    },
};
use common::{Server, pg};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tonic::{Code, transport::Channel};

type Client = WorkflowServiceClient<Channel>;

/// A store to run against; PostgreSQL's database lives as long as this value.
enum Store {
    Sqlite,
    Postgres(pg::Database),
}

impl Store {
    fn postgres() -> Store {
        Store::Postgres(pg::Database::create())
    }

    fn serve(&self) -> Server {
        self.serve_with(&[])
    }

    fn serve_with(&self, extra: &[(&str, &str)]) -> Server {
        let mut env = vec![("CITADEL_WORKFLOWS__POLL_INTERVAL_MS", "100")];
        if let Store::Postgres(db) = self {
            env.push(("CITADEL_DATABASE__URL", db.url.as_str()));
        }
        env.extend_from_slice(extra);
        Server::with_env("", &env)
    }
}

async fn client(server: &Server) -> Client {
    let channel = Channel::from_shared(server.grpc.clone()).unwrap();
    WorkflowServiceClient::new(channel.connect().await.unwrap())
}

fn submit(kind: &str, params: Value) -> SubmitWorkflowRequest {
    SubmitWorkflowRequest {
        kind: kind.into(),
        params: json::to_struct(&params),
        ..Default::default()
    }
}

fn fast_retries(max_attempts: u32) -> Option<RetryPolicy> {
    Some(RetryPolicy {
        max_attempts,
        initial_backoff_ms: 20,
        max_backoff_ms: 40,
    })
}

async fn send(client: &mut Client, request: SubmitWorkflowRequest) -> Workflow {
    let response = client.submit(request).await.expect("submit").into_inner();
    response.workflow.expect("workflow")
}

/// Every event of workflow `id` until it finishes (Watch ends the stream then).
async fn watch_to_end(client: &mut Client, id: &str, limit: Duration) -> Vec<WorkflowEvent> {
    let request = WatchWorkflowsRequest {
        id: id.into(),
        ..Default::default()
    };
    let mut stream = client.watch(request).await.expect("watch").into_inner();
    let mut events = Vec::new();
    let collect = async {
        while let Some(event) = stream.next().await {
            events.push(event.expect("event"));
        }
    };
    tokio::time::timeout(limit, collect)
        .await
        .unwrap_or_else(|_| panic!("workflow {id} did not finish within {limit:?}"));
    events
}

fn states(events: &[WorkflowEvent]) -> Vec<WorkflowState> {
    let mut out: Vec<WorkflowState> = Vec::new();
    for e in events {
        let s = e.state();
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

async fn get(client: &mut Client, id: &str) -> Workflow {
    let request = GetWorkflowRequest { id: id.into() };
    client.get(request).await.expect("get").into_inner()
}

async fn life_cycle(store: Store) {
    let server = store.serve();
    let mut c = client(&server).await;
    let w = send(&mut c, submit("sleep", json!({"ms": 300, "steps": 3}))).await;
    assert_eq!(w.state(), WorkflowState::Pending);
    let events = watch_to_end(&mut c, &w.id, Duration::from_secs(20)).await;
    let seen = states(&events);
    assert_eq!(seen.last(), Some(&WorkflowState::Success), "{events:?}");
    assert!(seen.contains(&WorkflowState::Started), "{events:?}");
    let progress: Vec<u64> = events
        .iter()
        .filter_map(|e| e.progress.as_ref().map(|p| p.done))
        .collect();
    assert!(
        progress.contains(&2) && progress.contains(&3),
        "{progress:?}"
    );
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert!(versions.windows(2).all(|v| v[0] < v[1]), "{versions:?}");

    let done = get(&mut c, &w.id).await;
    assert_eq!(done.state(), WorkflowState::Success);
    assert_eq!(done.attempts, 1);
    let result = json::from_value(done.result.as_ref().expect("result"));
    assert_eq!(result, json!({"slept_ms": 300, "attempt": 1}));
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert!(
        done.expires_at.is_some(),
        "a finished workflow has an expiry"
    );
    assert!(!done.worker.is_empty());

    let list = ListWorkflowsRequest {
        states: vec![WorkflowState::Success.into()],
        kind: "sleep".into(),
        ..Default::default()
    };
    let listed = c.list(list).await.unwrap().into_inner().workflows;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, w.id);
    let none = ListWorkflowsRequest {
        states: vec![WorkflowState::Failure.into()],
        ..Default::default()
    };
    assert!(
        c.list(none)
            .await
            .unwrap()
            .into_inner()
            .workflows
            .is_empty()
    );
    // Operators see it on /metrics: the submit and the attempt's outcome, by kind.
    let metrics = common::http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let has = |name: &str, labels: &[&str]| {
        metrics
            .lines()
            .any(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
    };
    assert!(
        has("citadel_workflows_submitted_total", &["kind=\"sleep\""]),
        "{metrics}"
    );
    assert!(
        has(
            "citadel_workflows_attempts_total",
            &["kind=\"sleep\"", "outcome=\"SUCCESS\""]
        ),
        "{metrics}"
    );
    assert!(
        has("citadel_workflows_queue_wait_seconds_bucket", &[]),
        "{metrics}"
    );
}

async fn retries_then_success(store: Store) {
    let server = store.serve();
    let mut c = client(&server).await;
    let mut request = submit("sleep", json!({"ms": 10, "fail_attempts": 2}));
    request.retry = fast_retries(3);
    // Watched before the submit: a Watch of one id opened after it starts at the current
    // state, and three fast attempts can be over by then.
    let every_sleep = WatchWorkflowsRequest {
        kinds: vec!["sleep".into()],
        ..Default::default()
    };
    let mut stream = c.watch(every_sleep).await.unwrap().into_inner();
    let w = send(&mut c, request).await;
    let mut events = Vec::new();
    let collect = async {
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            let done = event.state() == WorkflowState::Success;
            events.push(event);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), collect)
        .await
        .expect("the workflow's events within 20 s");
    assert!(events.iter().all(|e| e.workflow_id == w.id), "{events:?}");
    let retries = events
        .iter()
        .filter(|e| e.state() == WorkflowState::Retry)
        .count();
    assert_eq!(retries, 2, "{events:?}");
    let done = get(&mut c, &w.id).await;
    assert_eq!(done.state(), WorkflowState::Success, "{done:?}");
    assert_eq!(done.attempts, 3);

    // One attempt fewer than needed: FAILURE, with the last error.
    let mut request = submit("sleep", json!({"ms": 10, "fail_attempts": 5}));
    request.retry = fast_retries(2);
    let w = send(&mut c, request).await;
    watch_to_end(&mut c, &w.id, Duration::from_secs(20)).await;
    let failed = get(&mut c, &w.id).await;
    assert_eq!(failed.state(), WorkflowState::Failure);
    assert_eq!(failed.attempts, 2);
    assert!(failed.error.contains("on purpose"), "{}", failed.error);
}

async fn time_limit(store: Store) {
    let server = store.serve();
    let mut c = client(&server).await;
    let mut request = submit("sleep", json!({"ms": 60_000}));
    request.time_limit_ms = 300;
    request.retry = fast_retries(2);
    let w = send(&mut c, request).await;
    let started = std::time::Instant::now();
    watch_to_end(&mut c, &w.id, Duration::from_secs(20)).await;
    let failed = get(&mut c, &w.id).await;
    assert_eq!(failed.state(), WorkflowState::Failure, "{failed:?}");
    assert_eq!(
        failed.attempts, 2,
        "the time limit is retried like a failure"
    );
    assert!(failed.error.contains("time limit"), "{}", failed.error);
    assert!(started.elapsed() < Duration::from_secs(10));
}

async fn cancel_while_running(store: Store) {
    let server = store.serve();
    let mut c = client(&server).await;
    let w = send(&mut c, submit("sleep", json!({"ms": 60_000}))).await;
    let request = WatchWorkflowsRequest {
        id: w.id.clone(),
        ..Default::default()
    };
    let mut stream = c.watch(request).await.unwrap().into_inner();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("STARTED in time")
            .expect("stream open")
            .unwrap();
        if event.state() == WorkflowState::Started {
            break;
        }
    }
    let asked = std::time::Instant::now();
    let cancel = CancelWorkflowRequest { id: w.id.clone() };
    let answer = c.cancel(cancel.clone()).await.unwrap().into_inner();
    assert!(answer.cancel_requested);
    let mut last = None;
    while let Some(event) = stream.next().await {
        last = Some(event.unwrap());
    }
    let last = last.expect("events after the cancel");
    assert_eq!(last.state(), WorkflowState::Cancelled);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "a running task stops soon after the cancel, took {:?}",
        asked.elapsed()
    );
    // A finished workflow cannot be cancelled, whether it ended CANCELLED or SUCCESS.
    let again = c.cancel(cancel).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let noop = send(&mut c, submit("noop", json!({}))).await;
    watch_to_end(&mut c, &noop.id, Duration::from_secs(10)).await;
    let finished = c.cancel(CancelWorkflowRequest { id: noop.id }).await;
    assert_eq!(finished.unwrap_err().code(), Code::FailedPrecondition);
}

async fn idempotent_submit(store: Store) {
    let server = store.serve();
    let mut c = client(&server).await;
    let mut request = submit("noop", json!({"n": 1}));
    request.idempotency_key = "order-42".into();
    let first = c.submit(request.clone()).await.unwrap().into_inner();
    let second = c.submit(request.clone()).await.unwrap().into_inner();
    assert!(first.created && !second.created);
    assert_eq!(
        first.workflow.unwrap().id,
        second.workflow.as_ref().unwrap().id
    );
    request.params = json::to_struct(&json!({"n": 2}));
    let reused = c.submit(request).await.unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    let listed = c.list(ListWorkflowsRequest::default()).await.unwrap();
    assert_eq!(listed.into_inner().workflows.len(), 1);
}

/// Bad requests are INVALID_ARGUMENT naming the field; unknown ids NOT_FOUND.
async fn bad_requests(store: Store) {
    let server = store.serve();
    let mut c = client(&server).await;
    let cases = [
        submit("no_such_kind", json!({})),
        submit("sleep", json!({"ms": -1})),
        submit("embed_batch", json!({"model": "all-minilm"})),
        submit(
            "embed_batch",
            json!({"model": "m", "texts": ["a"], "output_file": "/etc/x"}),
        ),
        SubmitWorkflowRequest {
            priority: 1000,
            ..submit("noop", json!({}))
        },
        SubmitWorkflowRequest {
            idempotency_key: "key\u{0}with a NUL".into(),
            ..submit("noop", json!({}))
        },
        SubmitWorkflowRequest {
            not_before: Some(prost_types::Timestamp {
                seconds: i64::MIN / 2,
                nanos: 0,
            }),
            ..submit("noop", json!({}))
        },
    ];
    for request in cases {
        let error = c.submit(request.clone()).await.unwrap_err();
        assert_eq!(
            error.code(),
            Code::InvalidArgument,
            "{request:?}: {error:?}"
        );
        assert!(error.metadata().get("x-citadel-error-param").is_some());
    }
    let missing = c.get(GetWorkflowRequest { id: "nope".into() }).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let page = ListWorkflowsRequest {
        page_token: "garbage".into(),
        ..Default::default()
    };
    assert_eq!(
        c.list(page).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let lists = [
        ListWorkflowsRequest {
            kind: "noop\u{0}".into(),
            ..Default::default()
        },
        ListWorkflowsRequest {
            page_size: 501,
            ..Default::default()
        },
    ];
    for list in lists {
        let error = c.list(list.clone()).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{list:?}: {error:?}");
    }
    let everything = c.list(ListWorkflowsRequest::default()).await.unwrap();
    assert!(
        everything.into_inner().workflows.is_empty(),
        "no bad request queued anything"
    );
}

/// Watch with `kinds` sees only those kinds; at shutdown every Watch ends with UNAVAILABLE
/// instead of holding the drain open.
async fn watch_filters_kinds_and_ends_at_shutdown(store: Store) {
    let server = store.serve();
    let mut c = client(&server).await;
    let only_sleep = WatchWorkflowsRequest {
        kinds: vec!["sleep".into()],
        ..Default::default()
    };
    let mut stream = c.watch(only_sleep).await.unwrap().into_inner();
    send(&mut c, submit("noop", json!({}))).await;
    let sleep = send(&mut c, submit("sleep", json!({"ms": 10}))).await;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the sleep workflow's events in time")
            .expect("stream open")
            .unwrap();
        assert_eq!(event.kind, "sleep", "{event:?}");
        assert_eq!(event.workflow_id, sleep.id);
        if event.state() == WorkflowState::Success {
            break;
        }
    }

    server.sigterm();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return Some(status.code()),
                None => return None,
            }
        }
    })
    .await
    .expect("Watch ended soon after SIGTERM");
    assert_eq!(ended, Some(Code::Unavailable));
}

fn micros(t: &prost_types::Timestamp) -> i128 {
    i128::from(t.seconds) * 1_000_000 + i128::from(t.nanos / 1_000)
}

fn now_micros() -> i128 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i128::try_from(now.as_micros()).unwrap()
}

/// Every state change of 200 quick workflows reaches a Watch(all) subscriber, each workflow's
/// changes in order (PENDING, STARTED, SUCCESS), pushed rather than polled. How fast is the
/// benchmark's claim (`make bench-realtime`, BENCHMARKS.md: p99 about 5 ms); here the delay is
/// only printed, and bounded at one second so a delivery that fell back to polling or got stuck
/// behind a long lock fails, while a loaded two-core CI machine (p99 seen up to 103 ms) passes.
async fn watch_delivers_every_change(store: Store) {
    let server = store.serve();
    let mut c = client(&server).await;
    let mut stream = c
        .watch(WatchWorkflowsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let n = 200;
    let reader = tokio::spawn(async move {
        let mut seen: HashMap<String, Vec<WorkflowState>> = HashMap::new();
        let (mut delays, mut finished) = (Vec::new(), 0);
        while finished < n {
            let event = stream.next().await.expect("stream open").expect("event");
            delays.push(now_micros() - micros(event.at.as_ref().expect("at")));
            seen.entry(event.workflow_id.clone())
                .or_default()
                .push(event.state());
            if event.state() == WorkflowState::Success {
                finished += 1;
            }
        }
        (seen, delays)
    });
    let mut submitted = Vec::new();
    for _ in 0..n {
        submitted.push(send(&mut c, submit("noop", json!({}))).await.id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (seen, mut delays) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("every workflow finished")
        .unwrap();
    for id in &submitted {
        assert_eq!(
            seen.get(id).map(Vec::as_slice),
            Some(
                &[
                    WorkflowState::Pending,
                    WorkflowState::Started,
                    WorkflowState::Success
                ][..]
            ),
            "workflow {id}"
        );
    }
    delays.sort_unstable();
    let p = |q: f64| delays[((delays.len() as f64 * q) as usize).min(delays.len() - 1)];
    let (p50, p99, max) = (p(0.50), p(0.99), p(1.0));
    eprintln!(
        "watch delivery over {} events: p50 {p50} us, p99 {p99} us, max {max} us",
        delays.len()
    );
    assert!(max < 1_000_000, "an event took {max} us to arrive");
}

/// Higher priority runs first: with one slot busy, a later high-priority workflow overtakes an
/// earlier low-priority one.
async fn priority(store: Store) {
    let env = [("CITADEL_WORKFLOWS__CONCURRENCY", "1")];
    let server = store.serve_with(&env);
    let mut c = client(&server).await;
    let blocker = send(&mut c, submit("sleep", json!({"ms": 500}))).await;
    let low = send(
        &mut c,
        SubmitWorkflowRequest {
            priority: -5,
            ..submit("noop", json!({}))
        },
    )
    .await;
    let high = send(
        &mut c,
        SubmitWorkflowRequest {
            priority: 5,
            ..submit("noop", json!({}))
        },
    )
    .await;
    for id in [&blocker.id, &low.id, &high.id] {
        watch_to_end(&mut c, id, Duration::from_secs(20)).await;
    }
    let started = |w: &Workflow| micros(w.started_at.as_ref().expect("started"));
    let (low, high) = (get(&mut c, &low.id).await, get(&mut c, &high.id).await);
    assert!(started(&high) < started(&low), "{high:?} {low:?}");
}

/// Finished workflows are deleted after `result_ttl_secs`, and their idempotency key with
/// them.
async fn result_expiry(store: Store) {
    let env = [("CITADEL_WORKFLOWS__RESULT_TTL_SECS", "1")];
    let server = store.serve_with(&env);
    let mut c = client(&server).await;
    let mut request = submit("noop", json!({}));
    request.idempotency_key = "expiring".into();
    let w = send(&mut c, request.clone()).await;
    watch_to_end(&mut c, &w.id, Duration::from_secs(10)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = c.get(GetWorkflowRequest { id: w.id.clone() }).await;
        match found {
            Err(status) if status.code() == Code::NotFound => break,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("not deleted after its expiry: {other:?}"),
        }
    }
    let again = c.submit(request).await.unwrap().into_inner();
    assert!(again.created, "the key expired with its workflow");
    assert_ne!(again.workflow.unwrap().id, w.id);
}

macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $scenario() {
                    super::$scenario(super::Store::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $scenario() {
                    super::$scenario(super::Store::postgres()).await;
                }
            )*
        }
    };
}

on_both_stores!(
    life_cycle,
    retries_then_success,
    time_limit,
    cancel_while_running,
    idempotent_submit,
    bad_requests,
    watch_delivers_every_change,
    priority,
    result_expiry,
    watch_filters_kinds_and_ends_at_shutdown,
);
