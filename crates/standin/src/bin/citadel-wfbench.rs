//! `citadel-wfbench`: end-to-end throughput of Citadel's workflow queue for the benchmarks
//! (`bench/run-workflows.sh`). It opens a `Watch` stream on `citadel.v1.WorkflowService` first,
//! then submits `--n` workflows of one `--kind` with the same `--params` from `--concurrency`
//! submitters sharing one HTTP/2 connection (all at once, or at `--rate` per second), and waits
//! until every one of them has finished (SUCCESS, FAILURE or CANCELLED, as the stream reports).
//! Then it reads each back with `Get` and prints one JSON line:
//!
//! - `seconds`: from the first submit to the event that finished the last workflow;
//!   `tasks_per_s` = successes / `seconds` (submit to SUCCESS, end to end).
//! - `start_p50_ms` / `start_p99_ms`: submit to start, from the client's clock just before its
//!   `Submit` call to the server's `started_at` (one machine, one clock): the same span the Celery
//!   side measures (`time.time()` before `apply_async` to `time.time()` in the task).
//! - `server_start_p50_ms` / `server_start_p99_ms`: `started_at - created_at`, both the server's.
//! - `end_p50_ms` / `end_p99_ms`: client submit to the server's `finished_at`.
//! - `submit_seconds`: until the last `Submit` was answered; `busy_tasks_per_s`: successes over
//!   the first `started_at` to the last `finished_at` (the workers' own rate).
//! - `failures`: workflows that ended FAILURE or CANCELLED; `submit_errors`, `missing` (not
//!   finished before `--timeout`), `retries` (RETRY events seen). Any of them non-zero: exit 1.
//!
//! Should the stream end or fail mid-run, the unfinished workflows are polled with `Get` instead
//! (`"watch": "polled"` in the output; `seconds` is then only as precise as the polling).

use std::{
    collections::{HashMap, HashSet},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use citadel_proto::v1::{
    GetWorkflowRequest, SubmitWorkflowRequest, WatchWorkflowsRequest, Workflow, WorkflowEvent,
    WorkflowState, workflow_service_client::WorkflowServiceClient,
};
use clap::Parser;
use prost_types::Timestamp;
use serde_json::{Value as Json, json};
use tokio::{sync::mpsc, task::JoinSet};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(
    about = "Workflow queue benchmark against citadel.v1.WorkflowService; prints one JSON line"
)]
struct Args {
    /// Citadel's gRPC address: HOST:PORT or http://HOST:PORT.
    #[arg(long)]
    addr: String,
    /// The task kind submitted (noop, embed_batch, ...).
    #[arg(long, default_value = "noop")]
    kind: String,
    /// The parameters of every workflow: a JSON object.
    #[arg(long, default_value = "{}")]
    params: String,
    /// Workflows submitted.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Submits in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Open loop: workflow `i` is submitted at `i / rate` seconds (0: all at once, as fast as
    /// `--concurrency` submitters go). A light rate measures the pick-up latency of an idle queue.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds to wait for every workflow to finish, from the first submit.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
    /// Tokio worker threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// One submitted workflow: its id and the client's wall clock just before `Submit`, in µs.
struct Submitted {
    id: String,
    submit_us: i64,
}

/// What the wait for the workflows to finish saw.
#[derive(Default)]
struct Outcome {
    /// Id → client submit time (µs since the epoch).
    submitted: HashMap<String, i64>,
    /// Ours that finished: each id once (events come at least once).
    counted: HashSet<String>,
    /// Of those, by terminal state.
    successes: usize,
    failures: usize,
    first_error: Option<String>,
    submit_errors: usize,
    retries: usize,
    /// When the last of ours finished (as seen here).
    last_finish: Option<Instant>,
    /// From the first submit to `last_finish`.
    seconds: f64,
    /// The stream ended or failed and the rest was polled.
    polled: bool,
    submit_elapsed: Duration,
}

impl Outcome {
    /// Counts a terminal state of one of ours (anything else, or a repeat, is ignored).
    fn finish(&mut self, id: &str, state: i32, error: &str) {
        if !self.submitted.contains_key(id) || !self.counted.insert(id.to_string()) {
            return;
        }
        if state == WorkflowState::Success as i32 {
            self.successes += 1;
        } else {
            self.failures += 1;
            if self.first_error.is_none() {
                self.first_error = Some(format!("{id}: state {state}, {error}"));
            }
        }
        self.last_finish = Some(Instant::now());
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("citadel-wfbench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the report; `Ok(false)` when some workflow did not succeed.
fn run(args: &Args) -> anyhow::Result<bool> {
    if args.n == 0 || args.concurrency == 0 || args.timeout <= 0.0 || args.rate < 0.0 {
        bail!("--n, --concurrency and --timeout must be positive, --rate not negative");
    }
    let params: Json = serde_json::from_str(&args.params).context("--params is not JSON")?;
    let params = citadel_proto::json::to_struct(&params).context("--params must be an object")?;
    let url = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let channel = Endpoint::from_shared(url.clone())
            .context("--addr")?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        let outcome = submit_and_wait(args, channel.clone(), params).await?;
        let workflows = read_back(&channel, &outcome, args.concurrency).await?;
        let (line, ok) = report(args, &outcome, &workflows);
        println!("{line}");
        if let Some(error) = &outcome.first_error {
            eprintln!("citadel-wfbench: a workflow failed: {error}");
        }
        Ok(ok)
    })
}

fn is_terminal(state: i32) -> bool {
    matches!(
        WorkflowState::try_from(state),
        Ok(WorkflowState::Success | WorkflowState::Failure | WorkflowState::Cancelled)
    )
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn micros(t: Option<&Timestamp>) -> Option<i64> {
    t.map(|t| {
        t.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(t.nanos / 1_000))
    })
}

/// Opens the stream, submits everything, and waits for our workflows to finish.
async fn submit_and_wait(
    args: &Args,
    channel: Channel,
    params: prost_types::Struct,
) -> anyhow::Result<Outcome> {
    let mut watcher = WorkflowServiceClient::new(channel.clone());
    let mut stream = watcher
        .watch(WatchWorkflowsRequest {
            id: String::new(),
            kinds: vec![args.kind.clone()],
            ..Default::default()
        })
        .await
        .context("Watch")?
        .into_inner();

    // Submitters: each takes the next index until n are taken.
    let (ids_tx, mut ids_rx) = mpsc::unbounded_channel::<Result<Submitted, tonic::Status>>();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    for _ in 0..args.concurrency.min(args.n) {
        let (tx, next, n) = (ids_tx.clone(), Arc::clone(&next), args.n);
        let mut client = WorkflowServiceClient::new(channel.clone());
        let request = SubmitWorkflowRequest {
            kind: args.kind.clone(),
            params: Some(params.clone()),
            ..Default::default()
        };
        let (rate, origin) = (args.rate, tokio::time::Instant::from_std(start));
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                if rate > 0.0 {
                    tokio::time::sleep_until(origin + Duration::from_secs_f64(i as f64 / rate))
                        .await;
                }
                let submit_us = now_us();
                let answer = client.submit(request.clone()).await.and_then(|r| {
                    r.into_inner()
                        .workflow
                        .map(|w| Submitted {
                            id: w.id,
                            submit_us,
                        })
                        .ok_or_else(|| tonic::Status::internal("Submit answered no workflow"))
                });
                if tx.send(answer).is_err() {
                    return;
                }
            }
        });
    }
    drop(ids_tx);

    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.timeout);
    let mut out = Outcome::default();
    // Every terminal event seen, ours or not yet known to be ours (an event may beat the
    // answer to its Submit); delivery is at least once, so each id counts once.
    let mut finished: HashMap<String, i32> = HashMap::new();
    let mut submitting = true;
    let mut watching = true;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let mut last_error = None;

    loop {
        let expected = args.n - out.submit_errors;
        if !submitting && out.successes + out.failures == expected {
            break;
        }
        tokio::select! {
            submitted = ids_rx.recv(), if submitting => match submitted {
                Some(Ok(s)) => {
                    out.submitted.insert(s.id.clone(), s.submit_us);
                    if let Some(&state) = finished.get(&s.id) {
                        out.finish(&s.id, state, "");
                    }
                }
                Some(Err(status)) => {
                    out.submit_errors += 1;
                    if out.submit_errors == 1 {
                        eprintln!("citadel-wfbench: Submit failed: {status}");
                    }
                }
                None => {
                    submitting = false;
                    out.submit_elapsed = start.elapsed();
                }
            },
            event = stream.message(), if watching => match event {
                Ok(Some(WorkflowEvent { workflow_id, state, error, .. })) => {
                    if state == WorkflowState::Retry as i32 {
                        out.retries += 1;
                    }
                    if is_terminal(state) && !finished.contains_key(&workflow_id) {
                        finished.insert(workflow_id.clone(), state);
                        out.finish(&workflow_id, state, &error);
                    }
                }
                Ok(None) | Err(_) => {
                    let why = match event {
                        Err(status) => status.to_string(),
                        _ => "the server ended it".to_string(),
                    };
                    eprintln!("citadel-wfbench: Watch stream lost ({why}); polling with Get");
                    watching = false;
                    out.polled = true;
                }
            },
            _ = poll.tick(), if !watching => {
                let pending: Vec<String> = out
                    .submitted
                    .keys()
                    .filter(|id| !out.counted.contains(*id))
                    .take(256)
                    .cloned()
                    .collect();
                let mut gets = JoinSet::new();
                for id in pending {
                    let mut client = WorkflowServiceClient::new(channel.clone());
                    gets.spawn(async move { client.get(GetWorkflowRequest { id }).await });
                }
                while let Some(got) = gets.join_next().await {
                    match got {
                        Ok(Ok(w)) => {
                            let w = w.into_inner();
                            if is_terminal(w.state) {
                                out.finish(&w.id, w.state, &w.error);
                            }
                        }
                        Ok(Err(status)) => last_error = Some(status.to_string()),
                        Err(e) => last_error = Some(e.to_string()),
                    }
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                eprintln!(
                    "citadel-wfbench: timed out after {} s; last Get error: {}",
                    args.timeout,
                    last_error.as_deref().unwrap_or("none")
                );
                break;
            }
        }
    }
    if submitting {
        out.submit_elapsed = start.elapsed();
    }
    out.seconds = out
        .last_finish
        .map_or(0.0, |end| end.duration_since(start).as_secs_f64());
    Ok(out)
}

/// Every submitted workflow, read back with `Get` (`concurrency` at a time).
async fn read_back(
    channel: &Channel,
    out: &Outcome,
    concurrency: usize,
) -> anyhow::Result<Vec<Workflow>> {
    let ids: Arc<Vec<String>> = Arc::new(out.submitted.keys().cloned().collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut readers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (ids, next) = (Arc::clone(&ids), Arc::clone(&next));
        let mut client = WorkflowServiceClient::new(channel.clone());
        readers.spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else {
                    return Ok::<_, tonic::Status>(got);
                };
                got.push(
                    client
                        .get(GetWorkflowRequest { id: id.clone() })
                        .await?
                        .into_inner(),
                );
            }
        });
    }
    let mut workflows = Vec::with_capacity(ids.len());
    while let Some(joined) = readers.join_next().await {
        workflows.extend(joined.context("a Get task panicked")?.context("Get")?);
    }
    Ok(workflows)
}

/// Nearest-rank percentile of sorted µs values, in ms.
fn percentile_ms(sorted: &[i64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let us = sorted[rank.clamp(1, sorted.len()) - 1];
    Some(round3(us as f64 / 1000.0))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn report(args: &Args, out: &Outcome, workflows: &[Workflow]) -> (String, bool) {
    let seconds = out.seconds;
    let (mut start_client, mut start_server, mut end_client) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first_start, mut last_end) = (i64::MAX, i64::MIN);
    for w in workflows {
        let Some(&submit_us) = out.submitted.get(&w.id) else {
            continue;
        };
        let created = micros(w.created_at.as_ref());
        let started = micros(w.started_at.as_ref());
        let finished = micros(w.finished_at.as_ref());
        first_start = first_start.min(started.unwrap_or(i64::MAX));
        last_end = last_end.max(finished.unwrap_or(i64::MIN));
        if let Some(started) = started {
            start_client.push(started - submit_us);
            if let Some(created) = created {
                start_server.push(started - created);
            }
        }
        if let Some(finished) = finished {
            end_client.push(finished - submit_us);
        }
    }
    for v in [&mut start_client, &mut start_server, &mut end_client] {
        v.sort_unstable();
    }
    let missing = args.n - out.submit_errors - out.successes - out.failures;
    let tasks_per_s = if seconds > 0.0 {
        round3(out.successes as f64 / seconds)
    } else {
        0.0
    };
    // The workers' own rate: from the first start to the last finish (server clock).
    let busy_tasks_per_s = if last_end > first_start {
        round3(out.successes as f64 * 1e6 / (last_end - first_start) as f64)
    } else {
        0.0
    };
    let line = json!({
        "kind": args.kind,
        "n": args.n,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "seconds": round3(seconds),
        "tasks_per_s": tasks_per_s,
        "start_p50_ms": percentile_ms(&start_client, 50.0),
        "start_p99_ms": percentile_ms(&start_client, 99.0),
        "failures": out.failures,
        "server_start_p50_ms": percentile_ms(&start_server, 50.0),
        "server_start_p99_ms": percentile_ms(&start_server, 99.0),
        "end_p50_ms": percentile_ms(&end_client, 50.0),
        "end_p99_ms": percentile_ms(&end_client, 99.0),
        "submit_seconds": round3(out.submit_elapsed.as_secs_f64()),
        "busy_tasks_per_s": busy_tasks_per_s,
        "successes": out.successes,
        "submit_errors": out.submit_errors,
        "missing": missing,
        "retries": out.retries,
        "watch": if out.polled { "polled" } else { "stream" },
    });
    let ok = out.failures == 0 && out.submit_errors == 0 && missing == 0;
    (line.to_string(), ok)
}
