//! `citadel-loadgen`: a small HTTP/1.1 load generator for the benchmarks (`bench/run-*.sh`). It
//! POSTs one fixed body, or several in round-robin order (`--body-file` repeated, `--body-dir`),
//! to one URL over keep-alive connections and prints one JSON line with the request rate, the
//! outcome counts and latency percentiles.
//!
//! - `--mode closed`: `--concurrency` connections, each sending its next request as soon as the
//!   last one is answered (saturation throughput).
//! - `--mode rate`: an open loop at `--rate` requests/s over `--connections` connections. A
//!   dispatcher thread schedules request `i` at `start + i / rate`; latency is measured from that
//!   scheduled time, so a server that falls behind is charged for the queue it causes (no
//!   coordinated omission), and `service_*` is measured from the actual send.
//!
//! Requests started during `--warmup` are left out of the percentiles and `rps`. Every non-2xx
//! answer, 2xx answer without `--expect`, transport error, time-out or request left unsent is
//! counted in `errors`, the warm-up's included.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Uri,
    client::conn::http1::{self, SendRequest},
    header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpStream,
    sync::{Mutex, mpsc},
};

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Closed loop: `--concurrency` requests always in flight.
    Closed,
    /// Open loop at `--rate` requests/s.
    Rate,
}

#[derive(Parser)]
#[command(about = "HTTP/1.1 keep-alive load generator; prints one JSON line")]
struct Args {
    /// Target, e.g. http://127.0.0.1:8000/v1/embeddings (plain http only).
    #[arg(long)]
    url: String,
    /// File whose bytes are POSTed as application/json; repeat it for several bodies, which
    /// requests take in turn (round robin, shared by all connections).
    #[arg(long = "body-file", required_unless_present = "body_dir")]
    body_files: Vec<PathBuf>,
    /// Every *.json file of this directory is a body too (by name, after any --body-file).
    #[arg(long)]
    body_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "closed")]
    mode: Mode,
    /// Closed loop: connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop: requests per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Open loop: connections requests are spread over (the most in flight at once).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Tokio worker threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Per-request timeout in milliseconds (counted as an error).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// A 2xx answer must contain this string.
    #[arg(long, default_value = "\"embedding\"")]
    expect: String,
    /// Extra request header, "Name: value"; repeat for more.
    #[arg(long = "header")]
    headers: Vec<String>,
}

/// What every request is made of.
struct Target {
    connect: String,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    bodies: Vec<Bytes>,
    next: AtomicUsize,
    expect: Vec<u8>,
    timeout: Duration,
}

impl Target {
    /// The next request's body, in round-robin order (a single body skips the shared counter).
    fn body(&self) -> Bytes {
        let n = self.bodies.len();
        let i = (n > 1).then(|| self.next.fetch_add(1, Ordering::Relaxed) % n);
        self.bodies.get(i.unwrap_or(0)).cloned().unwrap_or_default()
    }
}

/// How one request ended; the index into `Tally::counts`.
#[derive(Clone, Copy)]
enum Outcome {
    Ok,
    Status,
    BadBody,
    Transport,
}

/// Counts and latencies (nanoseconds) of one worker, merged at the end.
#[derive(Default)]
struct Tally {
    /// Measured requests, by `Outcome`.
    counts: [u64; 4],
    /// Due in the measured window but still queued at the give-up time (open loop).
    unsent: u64,
    /// Requests of the warm-up, and how many failed: not in the percentiles, never hidden.
    warmup_requests: u64,
    warmup_errors: u64,
    latency: Vec<u64>,
    service: Vec<u64>,
}

impl Tally {
    fn record(&mut self, outcome: Outcome, latency: Duration, service: Duration) {
        self.counts[outcome as usize] += 1;
        self.latency.push(nanos(latency));
        self.service.push(nanos(service));
    }

    fn warmup(&mut self, outcome: Outcome) {
        self.warmup_requests += 1;
        self.warmup_errors += u64::from(!matches!(outcome, Outcome::Ok));
    }

    fn merge(&mut self, other: Tally) {
        self.counts
            .iter_mut()
            .zip(other.counts)
            .for_each(|(a, b)| *a += b);
        self.unsent += other.unsent;
        self.warmup_requests += other.warmup_requests;
        self.warmup_errors += other.warmup_errors;
        self.latency.extend(other.latency);
        self.service.extend(other.service);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.duration <= 0.0 || args.warmup < 0.0 || args.rate <= 0.0 {
        bail!("--duration and --rate must be positive, --warmup not negative");
    }
    let target = Arc::new(target(&args)?);
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
    let tally = runtime.block_on(async {
        match args.mode {
            Mode::Closed => closed(&args, &target).await,
            Mode::Rate => open(&args, &target).await,
        }
    })?;
    println!("{}", report(&args, &target, tally));
    Ok(())
}

fn target(args: &Args) -> anyhow::Result<Target> {
    let uri: Uri = args.url.parse().context("--url")?;
    if uri.scheme_str() != Some("http") {
        bail!("--url must be http://HOST:PORT/PATH");
    }
    let authority = uri.authority().context("--url has no host")?.clone();
    let mut headers = vec![
        (HOST, HeaderValue::from_str(authority.as_str())?),
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
    ];
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .context("--header must be Name: value")?;
        headers.push((name.trim().parse()?, HeaderValue::from_str(value.trim())?));
    }
    let bodies = bodies(args)?;
    Ok(Target {
        connect: format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        ),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        headers,
        bodies,
        next: AtomicUsize::new(0),
        expect: args.expect.as_bytes().to_vec(),
        timeout: Duration::from_millis(args.timeout_ms),
    })
}

/// Every `--body-file`, then the `*.json` files of `--body-dir` sorted by name.
fn bodies(args: &Args) -> anyhow::Result<Vec<Bytes>> {
    let mut paths = args.body_files.clone();
    if let Some(dir) = &args.body_dir {
        let listing = std::fs::read_dir(dir).with_context(|| dir.display().to_string())?;
        let mut found: Vec<_> = listing
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        found.retain(|p| p.extension().is_some_and(|e| e == "json"));
        found.sort();
        paths.extend(found);
    }
    if paths.is_empty() {
        bail!("no body: give --body-file, or a --body-dir holding *.json files");
    }
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    paths.iter().map(|p| read(p).map(Bytes::from)).collect()
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(&target.connect).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One request on `slot`'s connection, opened (again) when there is none.
async fn call(slot: &mut Option<Sender>, target: &Target) -> Outcome {
    let outcome = tokio::time::timeout(target.timeout, exchange(slot, target)).await;
    match outcome {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) | Err(_) => {
            *slot = None;
            Outcome::Transport
        }
    }
}

async fn exchange(slot: &mut Option<Sender>, target: &Target) -> anyhow::Result<Outcome> {
    let sender = match slot {
        Some(sender) if !sender.is_closed() => sender,
        _ => slot.insert(connect(target).await?),
    };
    sender.ready().await?;
    let mut request = Request::post(target.path.as_str()).body(Full::new(target.body()))?;
    request.headers_mut().extend(target.headers.iter().cloned());
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(if !status.is_success() {
        Outcome::Status
    } else if !target.expect.is_empty()
        && !body
            .windows(target.expect.len())
            .any(|w| w == target.expect)
    {
        Outcome::BadBody
    } else {
        Outcome::Ok
    })
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

async fn closed(args: &Args, target: &Arc<Target>) -> anyhow::Result<Tally> {
    let measure_from = Instant::now() + seconds(args.warmup);
    let end = measure_from + seconds(args.duration);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let target = target.clone();
        workers.spawn(async move {
            let (mut slot, mut tally) = (None, Tally::default());
            while Instant::now() < end {
                let sent = Instant::now();
                let outcome = call(&mut slot, &target).await;
                let transport_error = matches!(outcome, Outcome::Transport);
                if sent >= measure_from {
                    let took = sent.elapsed();
                    tally.record(outcome, took, took);
                } else {
                    tally.warmup(outcome);
                }
                if transport_error {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            tally
        });
    }
    Ok(join(workers).await)
}

async fn open(args: &Args, target: &Arc<Target>) -> anyhow::Result<Tally> {
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + seconds(args.warmup);
    let total = ((args.warmup + args.duration) * args.rate).round() as u64;
    // Requests still queued this long after the last one was due are given up as unsent.
    let give_up = measure_from + seconds(args.duration) + seconds(args.duration.max(5.0));
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rate = args.rate;
    // A thread of its own, not a tokio timer: tokio's timers round up to whole milliseconds.
    #[allow(clippy::disallowed_methods)] // std::thread::sleep, on no async worker
    let dispatcher = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + seconds(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if tx.send(due).is_err() {
                break;
            }
        }
    });
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.connections.max(1) {
        let (target, rx) = (target.clone(), rx.clone());
        workers.spawn(async move {
            let (mut slot, mut tally) = (None, Tally::default());
            loop {
                let next = rx.lock().await.recv().await;
                let Some(due) = next else { break };
                if Instant::now() > give_up {
                    tally.unsent += u64::from(due >= measure_from);
                    continue;
                }
                let sent = Instant::now();
                let outcome = call(&mut slot, &target).await;
                if due >= measure_from {
                    tally.record(outcome, due.elapsed(), sent.elapsed());
                } else {
                    tally.warmup(outcome);
                }
            }
            tally
        });
    }
    let tally = join(workers).await;
    if dispatcher.join().is_err() {
        bail!("the dispatcher thread panicked");
    }
    Ok(tally)
}

async fn join(mut workers: tokio::task::JoinSet<Tally>) -> Tally {
    let mut all = Tally::default();
    while let Some(result) = workers.join_next().await {
        match result {
            Ok(tally) => all.merge(tally),
            Err(_) => all.counts[Outcome::Transport as usize] += 1,
        }
    }
    all
}

/// `p` in 0..=1 of sorted nanoseconds, in microseconds with one decimal.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    (sorted[rank - 1] as f64 / 100.0).round() / 10.0
}

fn report(args: &Args, target: &Target, mut tally: Tally) -> serde_json::Value {
    tally.latency.sort_unstable();
    tally.service.sort_unstable();
    let [ok, non_2xx, bad_body, transport] = tally.counts;
    let closed = matches!(args.mode, Mode::Closed);
    let mut line = serde_json::json!({
        "mode": if closed { "closed" } else { "rate" },
        "url": args.url,
        "concurrency": closed.then_some(args.concurrency),
        "rate": (!closed).then_some(args.rate),
        "connections": (!closed).then_some(args.connections),
        "duration_s": args.duration,
        "bodies": target.bodies.len(),
        "requests": tally.latency.len() as u64 + tally.unsent,
        "ok": ok,
        "errors": non_2xx + bad_body + transport + tally.unsent + tally.warmup_errors,
        "non_2xx": non_2xx,
        "bad_body": bad_body,
        "transport_errors": transport,
        "unsent": tally.unsent,
        "warmup_requests": tally.warmup_requests,
        "warmup_errors": tally.warmup_errors,
        "rps": (ok as f64 / args.duration * 10.0).round() / 10.0,
    });
    for (prefix, sorted) in [("", &tally.latency), ("service_", &tally.service)] {
        for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
            line[format!("{prefix}{name}_us")] = percentile(sorted, p).into();
        }
    }
    line
}
