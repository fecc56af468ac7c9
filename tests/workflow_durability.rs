//! Workflows across real processes on real PostgreSQL: a worker killed with SIGKILL mid-task,
//! two worker processes sharing a thousand tasks, a database restarted under load, and workers
//! stopped with SIGTERM inside and past their grace period. Every process is the `citadel`
//! binary; the tests talk to `citadel serve` over gRPC and read the table with psql.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{HashMap, HashSet},
    process::{Child, Command, ExitStatus},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use citadel_proto::v1::{
    GetWorkflowRequest, RetryPolicy, SubmitWorkflowRequest, WatchWorkflowsRequest, Workflow,
    WorkflowEvent, WorkflowState, workflow_service_client::WorkflowServiceClient,
};
use common::{Server, pg};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tonic::{Code, transport::Channel};

type Client = WorkflowServiceClient<Channel>;

// ---------------------------------------------------------------------------------------------
// Processes

/// A `citadel worker` process, killed (SIGKILL) and reaped when dropped.
struct WorkerProc {
    name: String,
    /// Its operations port: `http://ADDR` (`/metrics`, `/health/...`, gRPC health).
    ops: String,
    child: Child,
    logs: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
}

/// Worker settings a test varies; the rest are short enough for tests.
#[derive(Clone)]
struct WorkerConfig {
    concurrency: usize,
    lease_ms: u64,
    heartbeat_ms: u64,
    grace_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 4,
            lease_ms: 10_000,
            heartbeat_ms: 2_000,
            grace_ms: 5_000,
        }
    }
}

impl WorkerProc {
    /// Starts `citadel worker` on `db_url` as `name` (its worker id is `name-PID-xxxxxxxx`)
    /// and waits for it to say it is ready.
    fn start(name: &str, db_url: &str, config: &WorkerConfig) -> WorkerProc {
        let concurrency = config.concurrency.to_string();
        let env: Vec<(&str, String)> = vec![
            ("CITADEL_DATABASE__URL", db_url.to_string()),
            ("CITADEL_WORKFLOWS__LEASE_MS", config.lease_ms.to_string()),
            (
                "CITADEL_WORKFLOWS__HEARTBEAT_MS",
                config.heartbeat_ms.to_string(),
            ),
            ("CITADEL_WORKFLOWS__POLL_INTERVAL_MS", "100".to_string()),
            ("CITADEL_WORKFLOWS__MONITOR_INTERVAL_MS", "200".to_string()),
            (
                "CITADEL_WORKFLOWS__SHUTDOWN_GRACE_MS",
                config.grace_ms.to_string(),
            ),
            // The worker's name in its id, so the table tells the workers apart.
            ("HOSTNAME", name.to_string()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (child, logs, lines) = common::spawn(&["worker", "--concurrency", &concurrency], &env);
        let mut worker = WorkerProc {
            name: name.to_string(),
            ops: String::new(),
            child,
            logs,
            exited: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        tokio::task::block_in_place(|| {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match lines.recv_timeout(left) {
                    Ok(line) if line.contains("citadel worker ready") => {
                        let ops = line
                            .split("\"ops_addr\":\"")
                            .nth(1)
                            .and_then(|r| r.split('"').next());
                        worker.ops = format!("http://{}", ops.expect("ops_addr in the ready line"));
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => panic!(
                        "worker {name} did not become ready (exit: {:?}):\n{}",
                        worker.child.try_wait(),
                        worker.logs()
                    ),
                }
            }
        });
        worker
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET` on the operations port: status and body.
    async fn ops_get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.ops))
            .await
            .expect("ops port");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// The prefix of the worker id this process records: `name-PID-`.
    fn id_prefix(&self) -> String {
        format!("{}-{}-", self.name, self.pid())
    }

    fn logs(&self) -> String {
        self.logs.lock().expect("logs").clone()
    }

    /// SIGKILL, then reap.
    fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.exited = Some(self.child.wait().expect("reap"));
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// `Some(status)` once the process has exited.
    fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `citadel serve` on `db_url` with its in-process worker off: the API only.
fn serve_api_only(db_url: &str) -> Server {
    tokio::task::block_in_place(|| {
        Server::with_env(
            "",
            &[
                ("CITADEL_DATABASE__URL", db_url),
                ("CITADEL_WORKFLOWS__WORKER_ENABLED", "false"),
                ("CITADEL_WORKFLOWS__POLL_INTERVAL_MS", "100"),
            ],
        )
    })
}

/// The last part of a log, for panic messages.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Everything the processes of a test logged (the last 8 KB of each).
fn logs(server: &Server, workers: &[&WorkerProc]) -> String {
    let mut out = format!(
        "--- serve (pid {}) ---\n{}",
        server.pid(),
        tail(&server.logs(), 8_000)
    );
    for w in workers {
        out.push_str(&format!(
            "\n--- worker {} (pid {}) ---\n{}",
            w.name,
            w.pid(),
            tail(&w.logs(), 8_000)
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Client

async fn client(server: &Server) -> Client {
    WorkflowServiceClient::connect(server.grpc.clone())
        .await
        .expect("connect to serve's gRPC")
}

fn submit_request(kind: &str, params: Value, max_attempts: u32) -> SubmitWorkflowRequest {
    SubmitWorkflowRequest {
        kind: kind.to_string(),
        params: citadel_proto::json::to_struct(&params),
        retry: Some(RetryPolicy {
            max_attempts,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
        }),
        ..Default::default()
    }
}

async fn submit(client: &mut Client, request: SubmitWorkflowRequest) -> Workflow {
    client
        .submit(request)
        .await
        .expect("submit")
        .into_inner()
        .workflow
        .expect("workflow in the response")
}

async fn get(client: &mut Client, id: &str) -> Workflow {
    client
        .get(GetWorkflowRequest { id: id.to_string() })
        .await
        .expect("get")
        .into_inner()
}

fn state_of(w: &Workflow) -> WorkflowState {
    WorkflowState::try_from(w.state).unwrap_or(WorkflowState::Unspecified)
}

fn is_finished(state: WorkflowState) -> bool {
    matches!(
        state,
        WorkflowState::Success | WorkflowState::Failure | WorkflowState::Cancelled
    )
}

/// Polls Get until `done` holds; `Err` with the last answer when `timeout` passed first.
async fn wait_until(
    client: &mut Client,
    id: &str,
    timeout: Duration,
    done: impl Fn(&Workflow) -> bool,
) -> Result<Workflow, Workflow> {
    let deadline = Instant::now() + timeout;
    loop {
        let w = get(client, id).await;
        if done(&w) {
            return Ok(w);
        }
        if Instant::now() >= deadline {
            return Err(w);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event of a Watch(all) stream, gathered in the background.
struct Watcher {
    events: Arc<Mutex<Vec<WorkflowEvent>>>,
    error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Returns once the server has subscribed: every change after this is seen.
    async fn all(client: &mut Client) -> Watcher {
        let mut stream = client
            .watch(WatchWorkflowsRequest::default())
            .await
            .expect("watch all")
            .into_inner();
        let events = Arc::new(Mutex::new(Vec::new()));
        let error = Arc::new(Mutex::new(None));
        let (sink, fault) = (events.clone(), error.clone());
        let task = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Ok(event)) => sink.lock().unwrap().push(event),
                    Some(Err(status)) => {
                        *fault.lock().unwrap() = Some(format!("{status:?}"));
                        return;
                    }
                    None => {
                        *fault.lock().unwrap() = Some("the stream ended".to_string());
                        return;
                    }
                }
            }
        });
        Watcher {
            events,
            error,
            task,
        }
    }

    fn snapshot(&self) -> Vec<WorkflowEvent> {
        self.events.lock().unwrap().clone()
    }

    fn error(&self) -> Option<String> {
        self.error.lock().unwrap().clone()
    }

    /// How many events of `state` each workflow got.
    fn count_by_id(&self, state: WorkflowState) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for e in self.snapshot() {
            if e.state == state as i32 {
                *counts.entry(e.workflow_id).or_insert(0) += 1;
            }
        }
        counts
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn describe(events: &[WorkflowEvent]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "  v{} {:?} attempts={} worker={} error={:?}\n",
                e.version,
                WorkflowState::try_from(e.state).unwrap_or(WorkflowState::Unspecified),
                e.attempts,
                e.worker,
                e.error
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_9_worker_mid_task_then_another_finishes_it_exactly_once() {
    let db = pg::Database::create();
    let server = serve_api_only(&db.url);
    let short_lease = WorkerConfig {
        concurrency: 1,
        lease_ms: 1_500,
        heartbeat_ms: 300,
        grace_ms: 5_000,
    };
    let mut a = WorkerProc::start("wfa", &db.url, &short_lease);
    let mut client = client(&server).await;
    let watcher = Watcher::all(&mut client).await;

    let params = json!({ "ms": 3_000, "steps": 6 });
    let id = submit(&mut client, submit_request("sleep", params, 3))
        .await
        .id;

    // Running on A, a step or two in.
    let a_prefix = a.id_prefix();
    let started = wait_until(&mut client, &id, Duration::from_secs(30), |w| {
        state_of(w) == WorkflowState::Started && w.worker.starts_with(&a_prefix)
    })
    .await
    .unwrap_or_else(|w| {
        panic!(
            "not STARTED by worker A within 30 s: {w:?}\n{}",
            logs(&server, &[&a])
        )
    });
    assert_eq!(started.attempts, 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mid = get(&mut client, &id).await;
    assert_eq!(
        state_of(&mid),
        WorkflowState::Started,
        "still running on A before the kill: {mid:?}\n{}",
        logs(&server, &[&a])
    );
    a.kill_9();
    let killed_at = Instant::now();

    let b = WorkerProc::start("wfb", &db.url, &short_lease);
    let b_prefix = b.id_prefix();
    let done = wait_until(&mut client, &id, Duration::from_secs(30), |w| {
        is_finished(state_of(w))
    })
    .await
    .unwrap_or_else(|w| {
        panic!(
            "not finished within 30 s of the kill: {w:?}\nevents:\n{}\n{}",
            describe(&watcher.snapshot()),
            logs(&server, &[&a, &b])
        )
    });
    let took = killed_at.elapsed();
    let context = || {
        format!(
            "workflow {done:?}\nevents:\n{}\n{}",
            describe(&watcher.snapshot()),
            logs(&server, &[&a, &b])
        )
    };
    assert_eq!(state_of(&done), WorkflowState::Success, "{}", context());
    assert_eq!(done.attempts, 2, "A's attempt and B's: {}", context());
    assert!(done.worker.starts_with(&b_prefix), "{}", context());
    let result = citadel_proto::json::from_value(done.result.as_ref().expect("result"));
    assert_eq!(result["attempt"], 2, "{}", context());
    // B can only have taken it after A's lease ran out (1.5 s), then slept 3 s.
    assert!(
        took >= Duration::from_secs(3),
        "finished {took:?} after the kill"
    );

    // A late or repeated outcome would show up here within a couple of seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(watcher.error(), None, "watch stream failed");
    let events: Vec<WorkflowEvent> = watcher
        .snapshot()
        .into_iter()
        .filter(|e| e.workflow_id == id)
        .collect();
    let successes: Vec<&WorkflowEvent> = events
        .iter()
        .filter(|e| e.state == WorkflowState::Success as i32)
        .collect();
    assert_eq!(
        successes.len(),
        1,
        "exactly one SUCCESS event:\n{}",
        describe(&events)
    );
    assert!(successes[0].worker.starts_with(&b_prefix));
    assert_eq!(successes[0].attempts, 2);
    // The dead worker's attempt was taken back as a retry, not run on beside B's.
    let retried = events.iter().any(|e| {
        e.state == WorkflowState::Retry as i32 && e.error.contains("stopped heartbeating")
    });
    assert!(
        retried,
        "a RETRY event for A's lost lease:\n{}",
        describe(&events)
    );
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert!(
        versions.windows(2).all(|v| v[0] < v[1]),
        "versions grow, no repeats:\n{}",
        describe(&events)
    );

    let row = db.query(&format!(
        "SELECT state || '|' || attempts || '|' || worker FROM workflows WHERE id = '{id}'"
    ));
    let fields: Vec<&str> = row.split('|').collect();
    assert_eq!(fields.len(), 3, "row: {row:?}");
    assert_eq!(fields[0], "SUCCESS", "row: {row}");
    assert_eq!(fields[1], "2", "row: {row}");
    assert!(
        fields[2].starts_with(&b_prefix),
        "row {row}, B is {b_prefix}"
    );
    // B's reaper took the lease back, and says so on B's own /metrics.
    let (status, metrics) = b.ops_get("/metrics").await;
    assert_eq!(status, 200);
    let expiries = metric(
        &metrics,
        "citadel_workflows_lease_expiries_total",
        &["kind=\"sleep\""],
    );
    assert_eq!(expiries, Some(1.0), "{metrics}");
}

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_tasks_over_two_worker_processes_each_run_once() {
    const N: usize = 1_000;
    let db = pg::Database::create();
    let server = serve_api_only(&db.url);
    let config = WorkerConfig {
        concurrency: 4,
        ..WorkerConfig::default()
    };
    let one = WorkerProc::start("wone", &db.url, &config);
    let two = WorkerProc::start("wtwo", &db.url, &config);
    let mut client = client(&server).await;
    let watcher = Watcher::all(&mut client).await;

    let started = Instant::now();
    let ids: Vec<String> = futures_util::stream::iter(0..N)
        .map(|_| {
            let mut client = client.clone();
            async move {
                submit(&mut client, submit_request("noop", json!({}), 3))
                    .await
                    .id
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let submitted = started.elapsed();
    let ids: HashSet<String> = ids.into_iter().collect();
    assert_eq!(ids.len(), N, "every submit made its own workflow");

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done: usize = db
            .query("SELECT count(*) FROM workflows WHERE state = 'SUCCESS'")
            .parse()
            .unwrap();
        if done == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {N} SUCCESS after 120 s; by state: {}\n{}",
            db.query(
                "SELECT string_agg(state || '=' || n, ', ') FROM \
                      (SELECT state, count(*) AS n FROM workflows GROUP BY state) s"
            ),
            logs(&server, &[&one, &two])
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ran = started.elapsed();

    assert_eq!(db.query("SELECT count(*) FROM workflows"), N.to_string());
    let odd = db.query(
        "SELECT count(*) FROM workflows WHERE state <> 'SUCCESS' OR attempts <> 1 \
         OR worker IS NULL",
    );
    assert_eq!(
        odd,
        "0",
        "every workflow SUCCESS on its first and only claim; others: {}",
        db.query(
            "SELECT string_agg(id || ':' || state || ':' || attempts, ' ') FROM workflows \
                  WHERE state <> 'SUCCESS' OR attempts <> 1"
        )
    );
    let share = |prefix: &str| -> usize {
        db.query(&format!(
            "SELECT count(*) FROM workflows WHERE worker LIKE '{prefix}%'"
        ))
        .parse()
        .unwrap()
    };
    let (by_one, by_two) = (share(&one.id_prefix()), share(&two.id_prefix()));
    assert_eq!(
        by_one + by_two,
        N,
        "every row names one of the two workers: {}",
        db.query("SELECT string_agg(DISTINCT worker, ', ') FROM workflows")
    );
    assert!(
        by_one > 0 && by_two > 0,
        "both workers ran a share: {by_one} and {by_two}"
    );

    // The watch stream: one SUCCESS per workflow, each one of ours, and one claim each.
    let deadline = Instant::now() + Duration::from_secs(15);
    while watcher.count_by_id(WorkflowState::Success).len() < N && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(watcher.error(), None, "watch stream failed");
    let successes = watcher.count_by_id(WorkflowState::Success);
    let total: usize = successes.values().sum();
    assert_eq!(successes.len(), N, "a SUCCESS event for every workflow");
    assert_eq!(total, N, "no SUCCESS event twice");
    assert!(successes.keys().all(|id| ids.contains(id)));
    let starts = watcher.count_by_id(WorkflowState::Started);
    let repeated: Vec<_> = starts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        starts.len() == N && repeated.is_empty(),
        "one STARTED event each: {} workflows, repeated {repeated:?}",
        starts.len()
    );
    eprintln!(
        "{N} noop: submitted in {submitted:?}, all SUCCESS after {ran:?}; \
         worker one ran {by_one}, worker two {by_two}"
    );
}

/// Whether a failed Submit may be sent again (the same idempotency key makes that safe).
fn transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn database_restarted_under_load_loses_nothing() {
    const N: usize = 300;
    let cluster = Arc::new(pg::PrivateCluster::start().unwrap_or_else(|e| {
        panic!("this test needs a PostgreSQL server of its own, which it could not start: {e}")
    }));
    let db = cluster.database();
    let server = serve_api_only(&db.url);
    let config = WorkerConfig {
        concurrency: 4,
        lease_ms: 5_000,
        heartbeat_ms: 1_000,
        grace_ms: 5_000,
    };
    let mut worker = WorkerProc::start("wdb", &db.url, &config);
    let mut client = client(&server).await;
    // Serve's event feed loses its LISTEN connection in the restart and must catch up.
    let watcher = Watcher::all(&mut client).await;

    // One submit every 15 ms (4.5 s in all); the database goes down after the 100th is
    // accepted, for 1.5 s, while the rest keep coming.
    let accepted = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicUsize::new(0));
    let codes = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let t0 = tokio::time::Instant::now();
    let mut submits = Vec::new();
    for i in 0..N {
        let mut client = client.clone();
        let (accepted, retried, codes) = (accepted.clone(), retried.clone(), codes.clone());
        submits.push(tokio::spawn(async move {
            tokio::time::sleep_until(t0 + Duration::from_millis(15 * i as u64)).await;
            let key = format!("restart-{i}");
            let mut request = submit_request("sleep", json!({ "ms": 20 }), 5);
            request.idempotency_key = key.clone();
            let give_up = Instant::now() + Duration::from_secs(60);
            let mut backoff = Duration::from_millis(50);
            let mut tries = 0;
            loop {
                tries += 1;
                match client.submit(request.clone()).await {
                    Ok(response) => {
                        accepted.fetch_add(1, Ordering::SeqCst);
                        if tries > 1 {
                            retried.fetch_add(1, Ordering::SeqCst);
                        }
                        let w = response.into_inner().workflow.expect("workflow");
                        assert_eq!(w.idempotency_key, key);
                        return (key, w.id);
                    }
                    Err(status) if transient(&status) && Instant::now() < give_up => {
                        *codes
                            .lock()
                            .unwrap()
                            .entry(format!("{:?}", status.code()))
                            .or_default() += 1;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                    Err(status) => panic!("submit {key} (try {tries}): {status:?}"),
                }
            }
        }));
    }

    // The restart: pg_ctl blocks, so it runs off the runtime.
    let restart = {
        let (cluster, accepted) = (cluster.clone(), accepted.clone());
        tokio::spawn(async move {
            while accepted.load(Ordering::SeqCst) < 100 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let down_at = t0.elapsed();
            let stopper = cluster.clone();
            tokio::task::spawn_blocking(move || stopper.stop())
                .await
                .unwrap()?;
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            tokio::task::spawn_blocking(move || cluster.start_again())
                .await
                .unwrap()?;
            Ok::<_, String>((down_at, t0.elapsed()))
        })
    };

    let mut ids_by_key = HashMap::new();
    for submit in submits {
        let (key, id) = submit.await.unwrap_or_else(|e| {
            panic!(
                "a submitter failed: {e}\nerrors seen: {:?}\n{}",
                codes.lock().unwrap(),
                logs(&server, &[&worker])
            )
        });
        ids_by_key.insert(key, id);
    }
    let (down_at, up_at) = restart
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("restarting PostgreSQL failed: {e}"));
    let submitted = t0.elapsed();
    assert_eq!(ids_by_key.len(), N);
    // The restart happened while submits were still arriving, not after them.
    let last_submit = Duration::from_millis(15 * (N as u64 - 1));
    assert!(
        down_at < last_submit,
        "the database went down at {down_at:?}, after the last submit started ({last_submit:?})"
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done: usize = db
            .query("SELECT count(*) FROM workflows WHERE state = 'SUCCESS'")
            .parse()
            .unwrap();
        if done == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {N} SUCCESS 120 s after the submits; by state: {}\n{}\n\
             --- postgres ---\n{}",
            db.query(
                "SELECT string_agg(state || '=' || n, ', ') FROM \
                      (SELECT state, count(*) AS n FROM workflows GROUP BY state) s"
            ),
            logs(&server, &[&worker]),
            tail(&cluster.log(), 4_000)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let finished = t0.elapsed();

    // Events are delayed by the restart, not lost: every workflow's SUCCESS reaches a watcher
    // that was connected throughout (at least once: repeats are allowed here).
    let ids: HashSet<&String> = ids_by_key.values().collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let missing = loop {
        let seen = watcher.count_by_id(WorkflowState::Success);
        let missing: Vec<&&String> = ids.iter().filter(|id| !seen.contains_key(**id)).collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break missing.len();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(watcher.error(), None, "watch stream failed");
    assert_eq!(
        missing,
        0,
        "SUCCESS events never delivered to Watch(all) for {missing} of {N} workflows\n{}",
        logs(&server, &[&worker])
    );
    let repeats: usize = watcher
        .count_by_id(WorkflowState::Success)
        .values()
        .map(|n| n - 1)
        .sum();

    // One row per key, and it is the workflow the client was told about.
    assert_eq!(
        db.query("SELECT count(*) || '|' || count(DISTINCT idempotency_key) FROM workflows"),
        format!("{N}|{N}")
    );
    let rows = db.query("SELECT idempotency_key || '|' || id FROM workflows");
    let stored: HashMap<String, String> = rows
        .lines()
        .map(|line| {
            let (key, id) = line.split_once('|').expect("key|id");
            (key.to_string(), id.to_string())
        })
        .collect();
    assert_eq!(
        stored, ids_by_key,
        "the table holds exactly the accepted workflows"
    );

    // Both processes lived through it, and serve still answers.
    assert_eq!(
        worker.try_exited(),
        None,
        "the worker died:\n{}",
        worker.logs()
    );
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).unwrap_or_default();
    let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
    assert!(
        matches!(state, Some(s) if s != 'Z' && s != 'X'),
        "serve is not running (stat {stat:?}):\n{}",
        server.logs()
    );
    let one = ids_by_key.values().next().unwrap();
    let w = get(&mut client, one).await;
    assert_eq!(state_of(&w), WorkflowState::Success);
    eprintln!(
        "{N} sleeps: database down {down_at:?}..{up_at:?}, submits done at {submitted:?} \
         ({} needed a retry; errors {:?}), all SUCCESS at {finished:?}; {repeats} repeated \
         SUCCESS events; outcome writes retried {} times",
        retried.load(Ordering::SeqCst),
        codes.lock().unwrap(),
        worker
            .logs()
            .matches("cannot record the outcome yet")
            .count()
    );
    drop(worker);
    drop(server);
    drop(db);
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_sigterm_finishes_running_task_within_grace() {
    let db = pg::Database::create();
    let server = serve_api_only(&db.url);
    // A lease shorter than the task: the worker must keep heartbeating while it drains, or its
    // own janitor takes the attempt back and the outcome is never recorded.
    let config = WorkerConfig {
        concurrency: 2,
        lease_ms: 700,
        heartbeat_ms: 150,
        grace_ms: 5_000,
    };
    let mut worker = WorkerProc::start("wterm", &db.url, &config);
    let mut client = client(&server).await;
    let prefix = worker.id_prefix();
    let (id, took) = sigterm_mid_task(&server, &mut client, &mut worker, 1_000, 1, 10).await;
    // Finished before the process exited: nothing left for anyone else.
    let w = get(&mut client, &id).await;
    assert_eq!(
        state_of(&w),
        WorkflowState::Success,
        "{w:?}\n{}",
        logs(&server, &[&worker])
    );
    assert_eq!(w.attempts, 1);
    assert!(w.worker.starts_with(&prefix));
    assert!(
        took < Duration::from_millis(4_000),
        "exited {took:?} after SIGTERM; the task needed at most 1 s"
    );
    let logged = worker.logs();
    assert!(
        logged.contains("worker draining") && !logged.contains("grace period over"),
        "SIGTERM reached the worker mid-task and the task finished within grace:\n{logged}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_sigterm_past_grace_gives_task_back() {
    let db = pg::Database::create();
    let server = serve_api_only(&db.url);
    let config = WorkerConfig {
        concurrency: 2,
        grace_ms: 300,
        ..WorkerConfig::default()
    };
    let mut first = WorkerProc::start("wgive", &db.url, &config);
    let mut client = client(&server).await;
    let (id, took) = sigterm_mid_task(&server, &mut client, &mut first, 5_000, 3, 3).await;
    // Given back: queued again, the interrupted attempt not counted.
    let row = db.query(&format!(
        "SELECT state || '|' || attempts || '|' || (lease_expires_us IS NULL) \
         FROM workflows WHERE id = '{id}'"
    ));
    assert_eq!(
        row,
        "PENDING|0|true",
        "state|attempts|lease cleared after the exit\n{}",
        logs(&server, &[&first])
    );
    let w = get(&mut client, &id).await;
    assert_eq!(state_of(&w), WorkflowState::Pending);
    assert_eq!(w.attempts, 0);

    let second = WorkerProc::start("wtake", &db.url, &config);
    let second_prefix = second.id_prefix();
    let done = wait_until(&mut client, &id, Duration::from_secs(30), |w| {
        is_finished(state_of(w))
    })
    .await
    .unwrap_or_else(|w| {
        panic!(
            "not finished by the second worker: {w:?}\n{}",
            logs(&server, &[&first, &second])
        )
    });
    assert_eq!(
        state_of(&done),
        WorkflowState::Success,
        "{done:?}\n{}",
        logs(&server, &[&first, &second])
    );
    assert_eq!(done.attempts, 1, "the given-back attempt did not count");
    assert!(done.worker.starts_with(&second_prefix), "{done:?}");
    eprintln!("SIGTERM past grace: exited in {took:?}");
}

/// Submits a `sleep` of `ms`, waits until `worker` runs it, sends SIGTERM and waits (at most
/// `exit_within_s`) for a clean exit. Returns the workflow id and how long the exit took.
async fn sigterm_mid_task(
    server: &Server,
    client: &mut Client,
    worker: &mut WorkerProc,
    ms: u64,
    max_attempts: u32,
    exit_within_s: u64,
) -> (String, Duration) {
    let request = submit_request("sleep", json!({ "ms": ms }), max_attempts);
    let id = submit(client, request).await.id;
    let prefix = worker.id_prefix();
    wait_until(client, &id, Duration::from_secs(30), |w| {
        state_of(w) == WorkflowState::Started && w.worker.starts_with(&prefix)
    })
    .await
    .unwrap_or_else(|w| panic!("not STARTED: {w:?}\n{}", logs(server, &[worker])));
    let asked = Instant::now();
    worker.sigterm();
    let status = worker
        .wait_exit(Duration::from_secs(exit_within_s))
        .await
        .unwrap_or_else(|| {
            panic!(
                "worker still running {exit_within_s} s after SIGTERM:\n{}",
                logs(server, &[worker])
            )
        });
    let took = asked.elapsed();
    assert!(
        status.success(),
        "exit status {status:?}:\n{}",
        logs(server, &[worker])
    );
    (id, took)
}

// ---------------------------------------------------------------------------------------------
// Observability: the worker's operations port and health that follows the database

async fn health_of(addr: String, service: &'static str) -> String {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let Ok(channel) = tonic::transport::Endpoint::from_shared(addr) else {
        return "BAD ADDRESS".into();
    };
    let Ok(channel) = channel.connect().await else {
        return "UNREACHABLE".into();
    };
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    match client.check(request).await {
        Ok(answer) => answer.into_inner().status().as_str_name().to_string(),
        Err(status) => format!("{:?}", status.code()),
    }
}

/// Polls `probe` until it returns `want` or 20 s pass; returns what it saw last.
async fn eventually<F, Fut>(want: &str, mut probe: F) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = probe().await;
        if seen == want || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_process_reports_the_queue_and_the_database_going_down_and_up() {
    let cluster = pg::PrivateCluster::start().unwrap_or_else(|e| {
        panic!("this test needs a PostgreSQL server of its own, which it could not start: {e}")
    });
    let db = cluster.database();
    let server = tokio::task::block_in_place(|| {
        Server::with_env(
            "",
            &[
                ("CITADEL_DATABASE__URL", db.url.as_str()),
                ("CITADEL_WORKFLOWS__WORKER_ENABLED", "false"),
                ("CITADEL_WORKFLOWS__MONITOR_INTERVAL_MS", "200"),
            ],
        )
    });
    let worker = WorkerProc::start("wops", &db.url, &WorkerConfig::default());
    let mut client = client(&server).await;
    // Four long sleeps on a worker of four, two more waiting behind them.
    for _ in 0..6 {
        submit(
            &mut client,
            submit_request("sleep", json!({"ms": 20_000}), 1),
        )
        .await;
    }
    let w = &worker;
    let census = move || async move {
        let (_, text) = w.ops_get("/metrics").await;
        let depth = |state: &str| {
            metric(
                &text,
                "citadel_workflows_queue_depth",
                &[&format!("state=\"{state}\""), "kind=\"sleep\""],
            )
        };
        format!("{:?}/{:?}", depth("STARTED"), depth("PENDING"))
    };
    assert_eq!(
        eventually("Some(4.0)/Some(2.0)", census).await,
        "Some(4.0)/Some(2.0)"
    );
    let (_, text) = worker.ops_get("/metrics").await;
    let age = metric(
        &text,
        "citadel_workflows_oldest_pending_age_seconds",
        &["kind=\"sleep\""],
    );
    assert!(age.is_some_and(|a| a >= 0.0), "{text}");
    assert_eq!(
        metric(&text, "citadel_workflows_database_up", &[]),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("citadel_workflows_running"), "{text}");

    // Health, every way an operator asks.
    assert_eq!(worker.ops_get("/health/").await.0, 200);
    assert_eq!(worker.ops_get("/health/ready").await.0, 200);
    let (status, detailed) = worker.ops_get("/health/detailed").await;
    let detailed: Value = serde_json::from_str(&detailed).unwrap();
    assert_eq!(status, 200, "{detailed}");
    assert_eq!(
        detailed["components"]["database"]["state"], "up",
        "{detailed}"
    );
    assert_eq!(
        detailed["components"]["database"]["backend"], "postgres",
        "{detailed}"
    );
    assert_eq!(health_of(worker.ops.clone(), "").await, "SERVING");
    assert_eq!(
        health_of(worker.ops.clone(), "citadel.v1.WorkflowService").await,
        "SERVING"
    );
    assert_eq!(
        health_of(server.grpc.clone(), "citadel.v1.WorkflowService").await,
        "SERVING"
    );
    let (_, body) = common::get_json(&server, "/health/detailed").await;
    assert_eq!(
        body["components"]["workflows"]["state"], "SERVING",
        "{body}"
    );

    // The database stops: both processes say so, and neither exits.
    cluster.stop().unwrap();
    let ops = worker.ops.clone();
    let seen = eventually("NOT_SERVING", || {
        health_of(ops.clone(), "citadel.v1.WorkflowService")
    })
    .await;
    assert_eq!(seen, "NOT_SERVING", "{}", logs(&server, &[&worker]));
    assert_eq!(health_of(worker.ops.clone(), "").await, "NOT_SERVING");
    let (status, body) = worker.ops_get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    let (status, _) = worker.ops_get("/health/").await;
    assert_eq!(status, 200, "liveness does not follow the database");
    let (_, text) = worker.ops_get("/metrics").await;
    assert_eq!(
        metric(&text, "citadel_workflows_database_up", &[]),
        Some(0.0),
        "{text}"
    );
    let grpc = server.grpc.clone();
    let seen = eventually("NOT_SERVING", || {
        health_of(grpc.clone(), "citadel.v1.WorkflowService")
    })
    .await;
    assert_eq!(seen, "NOT_SERVING", "{}", logs(&server, &[&worker]));
    assert_eq!(
        health_of(server.grpc.clone(), "citadel.v1.EmbeddingService").await,
        "SERVING"
    );
    let (status, body) = common::get_json(&server, "/health/detailed").await;
    assert_eq!(status, 200, "degraded, still serving embeddings: {body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(
        body["components"]["workflows"]["state"], "NOT_SERVING",
        "{body}"
    );

    // And back.
    cluster.start_again().unwrap();
    let seen = eventually("SERVING", || {
        health_of(ops.clone(), "citadel.v1.WorkflowService")
    })
    .await;
    assert_eq!(seen, "SERVING", "{}", logs(&server, &[&worker]));
    let seen = eventually("SERVING", || {
        health_of(grpc.clone(), "citadel.v1.WorkflowService")
    })
    .await;
    assert_eq!(seen, "SERVING", "{}", logs(&server, &[&worker]));
    assert_eq!(worker.ops_get("/health/ready").await.0, 200);
}
