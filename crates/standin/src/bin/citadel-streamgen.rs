//! `citadel-streamgen`: an SSE load generator for the LLM benchmark (`bench/run-llm.sh`). It
//! POSTs one fixed body (a chat completion with `"stream": true`) to one URL over keep-alive
//! HTTP/1.1 connections, one task per stream on one thread, reads every stream to its end and
//! prints one JSON line.
//!
//! - `--mode rate --rate R`: an open loop. A dispatcher thread schedules stream `i` at
//!   `start + i / R`; each stream takes an idle pooled connection (or opens one). TTFT and stream
//!   time count from the *scheduled* start, so a server (or this client) that falls behind is
//!   charged for the queue it causes (no coordinated omission).
//! - `--mode concurrent --streams N`: N connections, each with one stream open at all times (the
//!   next one sent as soon as the last ends). TTFT counts from the send, for every first chunk
//!   that arrives in the measured window (whenever its stream was sent, so that an overloaded
//!   server's slow first chunks are not left out); `waiting_first_chunk` is the streams still
//!   without one when the window closes. The streams still open then are dropped (reported as
//!   `unfinished`, not errors).
//!
//! TTFT ends at the first SSE event whose data carries a non-empty `"content"` (a delta);
//! `chunks` counts such events that arrive inside the measured window, over all streams. A
//! stream is an error when its status is not 200, it does not end with `data: [DONE]`, it
//! carries an `{"error": ...}` event, or its connection fails or it runs past `--timeout-ms`.
//! Outcomes and stream times count for the streams started (open loop: scheduled) after
//! `--warmup`; the warm-up's failures are reported apart (`warmup_errors`).

use std::{
    cell::RefCell,
    path::PathBuf,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, StatusCode, Uri,
    client::conn::http1::{self, SendRequest},
    header::{ACCEPT, CONTENT_TYPE, HOST, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::mpsc, task::LocalSet};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Open loop: `--rate` new streams per second.
    Rate,
    /// Closed loop: `--streams` streams open at all times.
    Concurrent,
}

#[derive(Parser)]
#[command(about = "SSE (chat completion stream) load generator; prints one JSON line")]
struct Args {
    /// Target, e.g. http://127.0.0.1:8000/v1/chat/completions (plain http only).
    #[arg(long)]
    url: String,
    /// File whose bytes are POSTed as application/json (it should ask for "stream": true).
    #[arg(long)]
    body_file: PathBuf,
    #[arg(long, value_enum, default_value = "rate")]
    mode: Mode,
    /// Open loop: new streams per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Closed loop: streams held open.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// One stream, from its (scheduled) start to its end; past it the stream is an error.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Open loop: a pooled connection idle longer than this is closed instead of reused (a
    /// server's keep-alive time-out would otherwise race the next request).
    #[arg(long, default_value_t = 2_000)]
    max_idle_ms: u64,
}

/// What every request is made of.
struct Target {
    connect: String,
    path: String,
    host: HeaderValue,
    body: Bytes,
    timeout: Duration,
    max_idle: Duration,
}

impl Target {
    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut request = Request::post(self.path.as_str()).body(Full::new(self.body.clone()))?;
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        Ok(request)
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// How one stream ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Status other than 200.
    Status,
    /// The body ended without `data: [DONE]`.
    NoDone,
    /// An `{"error": ...}` event.
    ErrorEvent,
    /// Connect, send or read failed.
    Transport,
    /// Past `--timeout-ms`.
    Timeout,
}

/// Everything counted, shared by the tasks of the one thread.
#[derive(Default)]
struct Tally {
    /// Measured streams by `Outcome` (index `Outcome as usize`).
    outcomes: [u64; 6],
    started: u64,
    warmup_started: u64,
    warmup_errors: u64,
    /// Content events that arrived inside the measured window (any stream's).
    chunks: u64,
    /// Measured streams that ended with no content event at all (no TTFT).
    no_content: u64,
    /// Streams still waiting for their first content event; at the end, those the window
    /// closed on, which have no TTFT either (concurrent mode: every stream open, warm-up's too).
    waiting: u64,
    /// Requests sent again on a fresh connection after a reused one failed before answering.
    retries: u64,
    connections: u64,
    /// This process's CPU time (clock ticks) when the window opened and closed.
    cpu_ticks: [Option<u64>; 2],
    /// TTFT and whole-stream time of measured streams, nanoseconds.
    ttft: Vec<u64>,
    stream: Vec<u64>,
}

/// The measured window: `[from, to)`.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    to: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.from && t < self.to
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.duration <= 0.0 || args.warmup < 0.0 || args.rate <= 0.0 || args.streams == 0 {
        bail!("--duration, --rate and --streams must be positive, --warmup not negative");
    }
    let target = Rc::new(target(&args)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tally = Rc::new(RefCell::new(Tally::default()));
    let local = LocalSet::new();
    runtime.block_on(local.run_until(async {
        match args.mode {
            Mode::Rate => open(&args, &target, &tally).await,
            Mode::Concurrent => concurrent(&args, &target, &tally).await,
        }
    }))?;
    let tally = tally.replace(Tally::default());
    // The streams still open (concurrent mode) go with the LocalSet, before the report.
    drop(local);
    println!("{}", report(&args, tally));
    Ok(())
}

fn target(args: &Args) -> anyhow::Result<Target> {
    let uri: Uri = args.url.parse().context("--url")?;
    if uri.scheme_str() != Some("http") {
        bail!("--url must be http://HOST:PORT/PATH");
    }
    let authority = uri.authority().context("--url has no host")?.clone();
    let body = std::fs::read(&args.body_file)
        .with_context(|| format!("reading {}", args.body_file.display()))?;
    Ok(Target {
        connect: format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        ),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        host: HeaderValue::from_str(authority.as_str())?,
        body: Bytes::from(body),
        timeout: Duration::from_millis(args.timeout_ms),
        max_idle: Duration::from_millis(args.max_idle_ms),
    })
}

async fn connect(target: &Target, tally: &RefCell<Tally>) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(&target.connect).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(connection);
    tally.borrow_mut().connections += 1;
    Ok(sender)
}

/// One SSE event's findings, reset at each blank line.
#[derive(Default)]
struct Event {
    open: bool,
    content: bool,
    done: bool,
    error: bool,
}

/// A minimal SSE reader: lines are looked at in place in each frame; only a line split across
/// frames is copied (into `partial`).
#[derive(Default)]
struct Sse {
    partial: Vec<u8>,
    event: Event,
    /// Content events, `[DONE]`, error events seen so far.
    content_events: u64,
    done: bool,
    error: bool,
}

impl Sse {
    /// Feeds one frame; returns the number of content events it completed.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let before = self.content_events;
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = data.split_at(nl);
            data = &rest[1..];
            if self.partial.is_empty() {
                self.line(line);
            } else {
                let mut joined = std::mem::take(&mut self.partial);
                joined.extend_from_slice(line);
                self.line(&joined);
                joined.clear();
                self.partial = joined;
            }
        }
        self.partial.extend_from_slice(data);
        self.content_events - before
    }

    /// The body ended: a last event without its blank line still counts.
    fn finish(&mut self) -> u64 {
        let before = self.content_events;
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.line(&last);
        }
        self.dispatch();
        self.content_events - before
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            self.event.open = true;
            if value.trim_ascii() == b"[DONE]" {
                self.event.done = true;
            } else if is_error(value) {
                self.event.error = true;
            } else if has_content(value) {
                self.event.content = true;
            }
        } else if line.strip_prefix(b"event:").map(<[u8]>::trim_ascii) == Some(b"error") {
            self.event.error = true;
        }
    }

    fn dispatch(&mut self) {
        let event = std::mem::take(&mut self.event);
        if !event.open && !event.error {
            return;
        }
        self.content_events += u64::from(event.content);
        self.done |= event.done;
        self.error |= event.error;
    }
}

/// `{"error": ...}` (OpenAI's shape) or `{"object": "error", ...}` (vLLM's older one).
fn is_error(data: &[u8]) -> bool {
    let Some(rest) = data.trim_ascii_start().strip_prefix(b"{") else {
        return false;
    };
    let rest = rest.trim_ascii_start();
    if rest.starts_with(b"\"error\"") {
        return true;
    }
    rest.strip_prefix(b"\"object\"")
        .and_then(|r| r.trim_ascii_start().strip_prefix(b":"))
        .is_some_and(|r| r.trim_ascii_start().starts_with(b"\"error\""))
}

/// A `"content"` key whose value is a non-empty string (so not a role chunk's `""`, not `null`).
fn has_content(data: &[u8]) -> bool {
    const KEY: &[u8] = b"\"content\"";
    let mut from = 0;
    // Scan for the key's rare second byte rather than for quotes, which JSON is full of.
    while let Some(at) = data[from..].iter().position(|&b| b == b'c') {
        let c = from + at;
        from = c + 1;
        if c == 0 || !data[c - 1..].starts_with(KEY) {
            continue;
        }
        let rest = data[c - 1 + KEY.len()..].trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let rest = rest.trim_ascii_start();
        if rest.first() == Some(&b'"') && rest.get(1).is_some_and(|&b| b != b'"') {
            return true;
        }
    }
    false
}

/// One stream's progress, kept outside its future so that a time-out does not lose it.
struct Progress {
    /// Scheduled start (open loop) or send (closed loop): TTFT and stream time count from it.
    start: Instant,
    window: Window,
    got_content: bool,
    /// Concurrent mode: a TTFT counts when the first chunk *arrives* in the window, whenever
    /// the stream started, so that the slow first chunks of streams sent during the warm-up
    /// are not left out (open loop: every stream scheduled in the window, all run to the end).
    by_arrival: bool,
}

impl Progress {
    /// Its outcome and stream time count.
    fn measured(&self) -> bool {
        self.start >= self.window.from
    }

    /// It is (still) in `waiting`.
    fn awaited(&self) -> bool {
        self.by_arrival || self.measured()
    }

    /// A first chunk arriving at `at` gives a TTFT sample.
    fn ttft_counts(&self, at: Instant) -> bool {
        if self.by_arrival {
            self.window.contains(at)
        } else {
            self.measured()
        }
    }
}

/// One stream on `slot`'s connection (opened when there is none); returns how it ended and
/// whether the connection can carry the next one.
async fn run_stream(
    slot: &mut Option<Sender>,
    reused: bool,
    target: &Target,
    tally: &RefCell<Tally>,
    progress: &mut Progress,
) -> (Outcome, bool) {
    match exchange(slot, reused, target, tally, progress).await {
        Ok(outcome) => (outcome, true),
        Err(_) => (Outcome::Transport, false),
    }
}

async fn exchange(
    slot: &mut Option<Sender>,
    mut reused: bool,
    target: &Target,
    tally: &RefCell<Tally>,
    progress: &mut Progress,
) -> anyhow::Result<Outcome> {
    let response = loop {
        if slot.as_ref().is_none_or(|s| s.is_closed()) {
            *slot = Some(connect(target, tally).await?);
            reused = false;
        }
        let Some(sender) = slot.as_mut() else {
            bail!("no connection");
        };
        let sent = async {
            sender.ready().await?;
            sender
                .send_request(target.request()?)
                .await
                .map_err(anyhow::Error::from)
        };
        match sent.await {
            Ok(response) => break response,
            // A kept-alive connection the server closed meanwhile: once more on a new one.
            Err(_) if reused => {
                *slot = None;
                tally.borrow_mut().retries += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let ok_status = response.status() == StatusCode::OK;
    let mut body = response.into_body();
    let mut sse = Sse::default();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if !ok_status {
            continue;
        }
        let events = sse.feed(data);
        if events > 0 {
            note_content(events, progress, tally);
        }
    }
    if ok_status {
        let events = sse.finish();
        if events > 0 {
            note_content(events, progress, tally);
        }
    }
    Ok(if !ok_status {
        Outcome::Status
    } else if sse.error {
        Outcome::ErrorEvent
    } else if !sse.done {
        Outcome::NoDone
    } else {
        Outcome::Ok
    })
}

fn note_content(events: u64, progress: &mut Progress, tally: &RefCell<Tally>) {
    let now = Instant::now();
    let mut tally = tally.borrow_mut();
    if !progress.got_content {
        progress.got_content = true;
        if progress.ttft_counts(now) {
            tally
                .ttft
                .push(nanos(now.saturating_duration_since(progress.start)));
        }
        if progress.awaited() {
            tally.waiting = tally.waiting.saturating_sub(1);
        }
    }
    if progress.window.contains(now) {
        tally.chunks += events;
    }
}

/// Counts a stream starting (scheduled, or sent) at `start`.
fn started(tally: &RefCell<Tally>, window: Window, start: Instant, by_arrival: bool) -> Progress {
    let progress = Progress {
        start,
        window,
        got_content: false,
        by_arrival,
    };
    let mut tally = tally.borrow_mut();
    if progress.measured() {
        tally.started += 1;
    } else {
        tally.warmup_started += 1;
    }
    tally.waiting += u64::from(progress.awaited());
    progress
}

/// Files one finished (or timed-out) stream.
fn file(tally: &RefCell<Tally>, progress: &Progress, outcome: Outcome) {
    let mut tally = tally.borrow_mut();
    if !progress.got_content && progress.awaited() {
        tally.waiting = tally.waiting.saturating_sub(1);
    }
    if !progress.measured() {
        tally.warmup_errors += u64::from(outcome != Outcome::Ok);
        return;
    }
    tally.outcomes[outcome as usize] += 1;
    tally.no_content += u64::from(!progress.got_content);
    if outcome == Outcome::Ok {
        tally.stream.push(nanos(progress.start.elapsed()));
    }
}

/// This process's user + system CPU time so far, in clock ticks (`/proc/self/stat`).
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Notes the CPU time when the window opens (and, with `at_end`, when it closes).
fn watch_cpu(tally: &Rc<RefCell<Tally>>, window: Window, at_end: bool) {
    let tally = tally.clone();
    tokio::task::spawn_local(async move {
        tokio::time::sleep_until(window.from.into()).await;
        tally.borrow_mut().cpu_ticks[0] = cpu_ticks();
        if at_end {
            tokio::time::sleep_until(window.to.into()).await;
            tally.borrow_mut().cpu_ticks[1] = cpu_ticks();
        }
    });
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Idle connections, most recently used last.
type Pool = Rc<RefCell<Vec<(Sender, Instant)>>>;

async fn open(args: &Args, target: &Rc<Target>, tally: &Rc<RefCell<Tally>>) -> anyhow::Result<()> {
    let start = Instant::now() + Duration::from_millis(20);
    let from = start + seconds(args.warmup);
    let window = Window {
        from,
        to: from + seconds(args.duration),
    };
    let total = ((args.warmup + args.duration) * args.rate).round() as u64;
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
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
    watch_cpu(tally, window, true);
    let pool: Pool = Rc::default();
    let mut streams = tokio::task::JoinSet::new();
    while let Some(due) = rx.recv().await {
        let (target, tally, pool) = (target.clone(), tally.clone(), pool.clone());
        let mut progress = started(&tally, window, due, false);
        streams.spawn_local(async move {
            let mut slot = None;
            let mut reused = false;
            {
                let mut idle = pool.borrow_mut();
                while let Some((sender, since)) = idle.pop() {
                    if !sender.is_closed() && since.elapsed() < target.max_idle {
                        slot = Some(sender);
                        reused = true;
                        break;
                    }
                }
            }
            let deadline = due + target.timeout;
            let (outcome, reusable) = tokio::time::timeout_at(
                deadline.into(),
                run_stream(&mut slot, reused, &target, &tally, &mut progress),
            )
            .await
            .unwrap_or((Outcome::Timeout, false));
            file(&tally, &progress, outcome);
            if let Some(sender) = slot
                && reusable
                && !sender.is_closed()
            {
                pool.borrow_mut().push((sender, Instant::now()));
            }
        });
        // Reap finished streams so the set does not grow with the run.
        while streams.try_join_next().is_some() {}
    }
    while streams.join_next().await.is_some() {}
    if dispatcher.join().is_err() {
        bail!("the dispatcher thread panicked");
    }
    Ok(())
}

async fn concurrent(
    args: &Args,
    target: &Rc<Target>,
    tally: &Rc<RefCell<Tally>>,
) -> anyhow::Result<()> {
    let begin = Instant::now();
    let from = begin + seconds(args.warmup);
    let window = Window {
        from,
        to: from + seconds(args.duration),
    };
    let n = args.streams;
    // Connections open over the first half of the warm-up (at most 1 s), not all in the same
    // millisecond, so the streams' chunks do not all fall due together either.
    let spread = seconds((args.warmup / 2.0).min(1.0));
    for i in 0..n {
        let (target, tally) = (target.clone(), tally.clone());
        let first = begin + spread.mul_f64(i as f64 / n as f64);
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(first.into()).await;
            let mut slot = None;
            while Instant::now() < window.to {
                let start = Instant::now();
                let mut progress = started(&tally, window, start, true);
                let deadline = start + target.timeout;
                let (outcome, reusable) = tokio::time::timeout_at(
                    deadline.into(),
                    run_stream(&mut slot, true, &target, &tally, &mut progress),
                )
                .await
                .unwrap_or((Outcome::Timeout, false));
                // A stream cut off by the end of the window is neither counted nor an error:
                // this task is dropped before it gets here.
                file(&tally, &progress, outcome);
                if !reusable {
                    slot = None;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
    }
    watch_cpu(tally, window, false);
    tokio::time::sleep_until(window.to.into()).await;
    tally.borrow_mut().cpu_ticks[1] = cpu_ticks();
    Ok(())
}

/// `p` in 0..=1 of sorted nanoseconds, in microseconds with one decimal.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    (sorted[rank - 1] as f64 / 100.0).round() / 10.0
}

fn report(args: &Args, mut tally: Tally) -> serde_json::Value {
    tally.ttft.sort_unstable();
    tally.stream.sort_unstable();
    let [ok, status, no_done, error_events, transport, timeouts] = tally.outcomes;
    let rate = args.mode == Mode::Rate;
    let errors = status + no_done + error_events + transport + timeouts;
    // Cores this load generator kept busy in the window (Linux's USER_HZ: 100 ticks a second).
    let client_cpu = match tally.cpu_ticks {
        [Some(from), Some(to)] => {
            let cores = to.saturating_sub(from) as f64 / 100.0 / args.duration;
            Some((cores * 1000.0).round() / 1000.0)
        }
        _ => None,
    };
    let mut line = serde_json::json!({
        "mode": if rate { "rate" } else { "concurrent" },
        "url": args.url,
        "rate": rate.then_some(args.rate),
        "streams": (!rate).then_some(args.streams),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "streams_started": tally.started,
        "streams_completed": ok,
        // Concurrent mode: measured streams still open when the window closed.
        "unfinished": tally.started.saturating_sub(ok + errors),
        "errors": errors,
        "non_200": status,
        "no_done": no_done,
        "error_events": error_events,
        "transport_errors": transport,
        "timeouts": timeouts,
        "no_content": tally.no_content,
        "waiting_first_chunk": tally.waiting,
        "warmup_streams": tally.warmup_started,
        "warmup_errors": tally.warmup_errors,
        "retries": tally.retries,
        "connections": tally.connections,
        "client_cpu_cores": client_cpu,
        "chunks": tally.chunks,
        "chunks_per_s": (tally.chunks as f64 / args.duration).round(),
        "streams_per_s": (ok as f64 / args.duration * 10.0).round() / 10.0,
    });
    for (prefix, sorted) in [("ttft", &tally.ttft), ("stream", &tally.stream)] {
        for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
            line[format!("{prefix}_{name}_us")] = percentile(sorted, p).into();
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &[u8] =
        br#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
    const TOKEN: &[u8] = br#"data: {"choices":[{"index":0,"delta":{"content":"tok0 "}}]}"#;
    const SPACED: &[u8] = br#"data: {"choices": [{"delta": {"content": "x"}}]}"#;
    const FINISH: &[u8] = br#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;

    fn events(parts: &[&[u8]]) -> Sse {
        let mut sse = Sse::default();
        for part in parts {
            sse.feed(part);
        }
        sse.finish();
        sse
    }

    #[test]
    fn content_is_a_non_empty_string() {
        assert!(has_content(&TOKEN[6..]));
        assert!(has_content(&SPACED[6..]));
        assert!(!has_content(&ROLE[6..]));
        assert!(!has_content(&FINISH[6..]));
        assert!(!has_content(br#"{"delta":{"content":null}}"#));
        assert!(!has_content(br#"{"delta":{"reasoning_content":"x"}}"#));
    }

    #[test]
    fn errors_in_both_shapes() {
        assert!(is_error(br#"{"error":{"message":"boom"}}"#));
        assert!(is_error(br#" { "error": {"message": "boom"}}"#));
        assert!(is_error(br#"{"object": "error", "message": "boom"}"#));
        assert!(!is_error(&TOKEN[6..]));
    }

    #[test]
    fn a_stream_split_anywhere_reads_the_same() {
        let whole = [
            ROLE,
            b"\n\n",
            TOKEN,
            b"\n\n",
            TOKEN,
            b"\r\n\r\n",
            FINISH,
            b"\n\ndata: [DONE]\n\n",
        ]
        .concat();
        for cut in 0..whole.len() {
            let (a, b) = whole.split_at(cut);
            let sse = events(&[a, b]);
            assert_eq!(sse.content_events, 2, "cut at {cut}");
            assert!(sse.done && !sse.error, "cut at {cut}");
        }
    }

    #[test]
    fn no_done_and_error_events_are_seen() {
        let sse = events(&[TOKEN, b"\n\n"]);
        assert!(!sse.done);
        let sse = events(&[TOKEN, b"\n\ndata: {\"error\":{}}\n\ndata: [DONE]\n\n"]);
        assert!(sse.error && sse.done);
        // A last event without its blank line still counts.
        let sse = events(&[TOKEN, b"\n\ndata: [DONE]"]);
        assert!(sse.done);
    }
}
