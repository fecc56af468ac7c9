//! The real-time edge's benchmark client (bench/run-realtime.sh runs it).
//!
//! `events`: delivery latency of workflow events, from the committing write (the record's
//! `updated_at`, stamped inside the writing transaction) to the moment a client has the
//! event. First the baseline, one `WorkflowService.Watch` with records over gRPC; then
//! `--subscribers` WebSockets on `/ws/orchestration`, all subscribed to `workflows`, while
//! `--workflows` noop workflows are submitted at `--rate` per second. Every socket must see
//! every change; the report counts what it got.
//!
//! `agui`: time to the first text, alternating a streamed `POST /v1/chat/completions` and
//! `POST /api/v1/agui` (which wraps that call) with the same message, one at a time.
//!
//! One JSON line per leg on stdout.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use citadel_proto::v1::{
    SubmitWorkflowRequest, WatchWorkflowsRequest, WorkflowState,
    workflow_service_client::WorkflowServiceClient,
};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn::http1};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::Mutex, task::JoinSet};
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    leg: Leg,
}

#[derive(Subcommand)]
enum Leg {
    Events {
        /// host:port of the REST edge.
        #[arg(long)]
        http: String,
        /// http://host:port of the gRPC server.
        #[arg(long)]
        grpc: String,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 300)]
        workflows: usize,
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
    },
    Agui {
        #[arg(long)]
        http: String,
        #[arg(long, default_value_t = 200)]
        requests: usize,
    },
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn report(leg: &str, mut samples: Vec<i64>, extra: Value) {
    samples.sort_unstable();
    let mut line = json!({"leg": leg, "samples": samples.len(),
        "p50_us": percentile(&samples, 0.50), "p99_us": percentile(&samples, 0.99),
        "max_us": samples.last().copied().unwrap_or(0)});
    if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), extra) {
        line.extend(extra);
    }
    println!("{line}");
}

/// Submits `n` noop workflows at `rate` per second (open loop).
async fn submit_all(grpc: &Channel, n: usize, rate: f64) -> anyhow::Result<()> {
    let mut client = WorkflowServiceClient::new(grpc.clone());
    let gap = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + gap * i as u32).await;
        let request = SubmitWorkflowRequest {
            kind: "noop".into(),
            ..Default::default()
        };
        client.submit(request).await.context("Submit")?;
    }
    Ok(())
}

/// The baseline: one gRPC Watch with records.
async fn grpc_leg(grpc: &Channel, n: usize, rate: f64) -> anyhow::Result<()> {
    let mut watcher = WorkflowServiceClient::new(grpc.clone());
    let request = WatchWorkflowsRequest {
        kinds: vec!["noop".into()],
        records: true,
        ..Default::default()
    };
    let mut stream = watcher.watch(request).await?.into_inner();
    let submitting = tokio::spawn({
        let grpc = grpc.clone();
        async move { submit_all(&grpc, n, rate).await }
    });
    let (mut samples, mut done) = (Vec::new(), 0);
    while done < n {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .context("no event for 30 s")??
            .context("the watch ended")?;
        let at = event.at.context("event without `at`")?;
        samples.push(now_us() - (at.seconds * 1_000_000 + i64::from(at.nanos / 1_000)));
        if event.state() == WorkflowState::Success {
            done += 1;
        }
    }
    submitting.await??;
    report("grpc-watch-1", samples, json!({"workflows": n}));
    Ok(())
}

#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    r#type: &'a str,
    #[serde(default)]
    snapshot: bool,
    #[serde(borrow)]
    workflow: Option<FrameWorkflow<'a>>,
}

#[derive(serde::Deserialize)]
struct FrameWorkflow<'a> {
    #[serde(borrow)]
    state: &'a str,
    #[serde(borrow)]
    updated_at: &'a str,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn subscribed_socket(http: &str) -> anyhow::Result<Socket> {
    let url = format!("ws://{http}/ws/orchestration");
    // tungstenite zero-fills its whole read buffer (128 KiB by default) on every read: a
    // third of these clients' CPU, taken from the two cores the server runs on. Browsers pay
    // nothing like it, so the clients read 8 KiB at a time. (`true`: TCP_NODELAY, for the
    // subscribe they send; they write nothing else.)
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    let subscribe =
        json!({"type": "subscribe", "id": "s", "topics": ["workflows"], "kinds": ["noop"]});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await?;
    loop {
        let Some(frame) = socket.next().await else {
            bail!("closed before the ack")
        };
        if let Message::Text(text) = frame? {
            let message: Value = serde_json::from_str(text.as_str())?;
            // In sync once the snapshot has been sent: every change after this arrives.
            if message["type"] == "synced" {
                return Ok(socket);
            }
        }
    }
}

/// One subscriber: latencies of the non-snapshot workflow events until `n` SUCCESS.
async fn follow(mut socket: Socket, n: usize) -> anyhow::Result<(Vec<i64>, usize)> {
    let (mut samples, mut done, mut lagged) = (Vec::new(), 0, 0);
    while done < n {
        let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .context("no frame for 30 s")?
            .context("the socket closed")??;
        let Message::Text(text) = frame else { continue };
        let received = now_us();
        // Only the fields needed: the client's own parsing shares the two cores.
        let frame: Frame = serde_json::from_str(text.as_str())?;
        match (frame.r#type, frame.workflow) {
            ("workflow", Some(w)) if !frame.snapshot => {
                let at: prost_types::Timestamp =
                    w.updated_at.parse().context("updated_at is RFC 3339")?;
                samples.push(received - (at.seconds * 1_000_000 + i64::from(at.nanos / 1_000)));
                if w.state == "SUCCESS" {
                    done += 1;
                }
            }
            ("lagged", _) => lagged += 1,
            _ => {}
        }
    }
    Ok((samples, lagged))
}

async fn ws_leg(
    http: &str,
    grpc: &Channel,
    subscribers: usize,
    n: usize,
    rate: f64,
) -> anyhow::Result<()> {
    let mut sockets = Vec::with_capacity(subscribers);
    let opened = Instant::now();
    let mut opening = JoinSet::new();
    let http: Arc<str> = http.into();
    for _ in 0..subscribers {
        let http = http.clone();
        opening.spawn(async move { subscribed_socket(&http).await });
        if opening.len() >= 64 {
            sockets.push(opening.join_next().await.context("open")???);
        }
    }
    while let Some(socket) = opening.join_next().await {
        sockets.push(socket??);
    }
    let open_ms = opened.elapsed().as_millis() as u64;
    let results = Arc::new(Mutex::new((Vec::new(), 0usize)));
    let mut following = JoinSet::new();
    for socket in sockets {
        let results = results.clone();
        following.spawn(async move {
            let (samples, lagged) = follow(socket, n).await?;
            let mut all = results.lock().await;
            all.0.extend(samples);
            all.1 += lagged;
            anyhow::Ok(())
        });
    }
    submit_all(grpc, n, rate).await?;
    while let Some(done) = following.join_next().await {
        done??;
    }
    let (samples, lagged) = std::mem::take(&mut *results.lock().await);
    report(
        &format!("ws-{subscribers}"),
        samples,
        json!({"workflows": n, "subscribers": subscribers, "lagged": lagged, "open_ms": open_ms}),
    );
    Ok(())
}

/// Microseconds from sending `body` to `path` to the first chunk holding `marker`.
async fn first_text(http: &str, path: &str, body: &Value, marker: &str) -> anyhow::Result<i64> {
    let stream = TcpStream::connect(http).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::post(path)
        .header("host", http)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let sent = Instant::now();
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("{path}: {}", response.status());
    }
    let mut body = response.into_body();
    let mut seen = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
            if seen.contains(marker) {
                return Ok(sent.elapsed().as_micros() as i64);
            }
        }
    }
    bail!("{path}: the stream ended without {marker}")
}

async fn agui_leg(http: &str, requests: usize) -> anyhow::Result<()> {
    let messages = json!([{"role": "user", "content": "hello there"}]);
    let chat = json!({"model": "standin-llm", "stream": true, "messages": messages});
    let run = json!({"threadId": "t", "runId": "r", "messages": [
        {"id": "m", "role": "user", "content": "hello there"}], "tools": [], "context": []});
    let (mut direct, mut agent) = (Vec::new(), Vec::new());
    for _ in 0..requests {
        direct.push(first_text(http, "/v1/chat/completions", &chat, "\"content\"").await?);
        agent.push(first_text(http, "/api/v1/agui", &run, "TEXT_MESSAGE_CONTENT").await?);
    }
    report("chat-stream-first-text", direct, json!({}));
    report("agui-first-text", agent, json!({}));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.leg {
        Leg::Events {
            http,
            grpc,
            subscribers,
            workflows,
            rate,
        } => {
            let channel = Channel::from_shared(grpc)?.connect().await?;
            grpc_leg(&channel, workflows, rate).await?;
            ws_leg(&http, &channel, subscribers, workflows, rate).await?;
        }
        Leg::Agui { http, requests } => agui_leg(&http, requests).await?,
    }
    Ok(())
}
