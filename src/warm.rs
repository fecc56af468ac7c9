//! `citadel cache warm FILE`: fills a running server's embedding cache (L1 and the Redis L2)
//! by embedding every text of FILE through gRPC `Embed`, as any client would.
//!
//! The whole file is read and checked before anything is sent, so a bad line fails in
//! milliseconds instead of after half the corpus. Batches then go out `--concurrency` at a time;
//! the vectors themselves are dropped, since the server keeps them.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use citadel_proto::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use clap::{Args, builder::RangedU64ValueParser};
use futures_util::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use tonic::{Code, Request, Status, transport::Channel};

/// The server's default `grpc.max_message_bytes`: 2048 vectors of 1024 dims need 8 MiB,
/// twice tonic's 4 MiB client default.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// The server's own ceiling for one request (`http.request_timeout_ms`): a full batch of long
/// texts on a small CPU takes about a minute, so anything past this is a hung call.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Shed (RESOURCE_EXHAUSTED) or not-ready (UNAVAILABLE) batches are retried this often: both
/// are transient, and a warm job started right after `citadel serve` meets the second.
const MAX_RETRIES: u32 = 5;
/// How often the plain progress line is printed when stderr is not a terminal (CI logs).
const LINE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct WarmArgs {
    /// Texts to embed: one per line (blank lines skipped); a `.jsonl` file holds one JSON object
    /// per line with a `text` (or `input`) string; `-` reads plain lines from stdin.
    file: PathBuf,
    /// gRPC address of the running `citadel serve`.
    #[arg(long, env = "CITADEL_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Model name or alias to embed with (the cache is per model).
    #[arg(long, default_value = "all-minilm")]
    model: String,
    /// Texts per Embed request (the server accepts at most 2048).
    #[arg(long, default_value_t = 64,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=2048))]
    batch_size: usize,
    /// Embed requests in flight at once.
    #[arg(long, default_value_t = 4,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=256))]
    concurrency: usize,
    /// Prompt configured for the model (EmbedRequest.prompt_name): the cache key includes the
    /// prompt, so warm with the one your clients will send.
    #[arg(long)]
    prompt_name: Option<String>,
    /// A Citadel API key (or Clerk session token) for a server with `auth.mode = "required"`.
    #[arg(long, env = "CITADEL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

pub fn run(args: &WarmArgs) -> ExitCode {
    // One thread is plenty: the work is waiting on the server.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(warm(args)) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn warm(args: &WarmArgs) -> anyhow::Result<String> {
    let texts = read_texts(&args.file)?;
    let total = texts.len();
    if total == 0 {
        eprintln!("warning: {} holds no texts", args.file.display());
    }
    let client = connect(&args.server).await?;

    let started = Instant::now();
    let mut progress = Progress::new(total, started);
    // Batches are cut lazily from the owned texts: no copy of the corpus.
    let mut texts = texts.into_iter();
    let batches = std::iter::from_fn(move || {
        let batch: Vec<String> = texts.by_ref().take(args.batch_size).collect();
        (!batch.is_empty()).then_some(batch)
    });
    let mut results = stream::iter(batches)
        .map(|batch| embed(client.clone(), args, batch))
        .buffer_unordered(args.concurrency);
    let (mut done, mut cached) = (0usize, 0u64);
    // The first error ends the run; dropping the stream cancels the batches still in flight.
    while let Some(result) = results.next().await {
        let (n, hits) = result?;
        done += n;
        cached += hits;
        progress.update(done);
    }

    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    Ok(format!(
        "warmed {done} texts ({cached} already cached) in {secs:.1} s, {rate:.0} texts/s"
    ))
}

/// Reads FILE (or stdin) into texts; errors name `file:line` so the line can be fixed.
fn read_texts(file: &Path) -> anyhow::Result<Vec<String>> {
    let (name, content) = if file == Path::new("-") {
        let content = std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?;
        ("stdin".to_string(), content)
    } else {
        let name = file.display().to_string();
        let content = std::fs::read_to_string(file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow!("{name}: file not found: check the path, or pass `-` to read stdin")
            }
            _ => anyhow!("cannot read {name}: {e}"),
        })?;
        (name, content)
    };
    if file.extension().is_some_and(|ext| ext == "jsonl") {
        // The same reader the workflow kinds use, so one file serves both.
        let records = citadel_workflows::tasks::jsonl::parse(&name, &content, None)
            .map_err(anyhow::Error::msg)?;
        return Ok(records.into_iter().map(|r| r.text).collect());
    }
    // Kept exactly as written: the cache key is the text, spaces included.
    Ok(content
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Connects eagerly, so a wrong address fails before any batch with the fix spelled out.
pub(crate) async fn connect(server: &str) -> anyhow::Result<EmbeddingServiceClient<Channel>> {
    // `host:port` is what the server logs as `grpc_addr`; accept it as typed.
    let url = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    let endpoint = Channel::from_shared(url)
        .map_err(|e| {
            anyhow!("--server {server} is not a URL ({e}): use e.g. http://127.0.0.1:50051")
        })?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| {
        // The OS error ("Connection refused") says more than tonic's "transport error".
        let cause = anyhow::Error::new(e).root_cause().to_string();
        anyhow!(
            "cannot reach citadel at {server} ({cause}): is `citadel serve` running? set --server or CITADEL_SERVER"
        )
    })?;
    Ok(EmbeddingServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// One batch: returns (texts embedded, texts the server already had cached).
async fn embed(
    mut client: EmbeddingServiceClient<Channel>,
    args: &WarmArgs,
    inputs: Vec<String>,
) -> anyhow::Result<(usize, u64)> {
    let mut retries = 0;
    loop {
        // The default cache policy reads and writes: exactly what warming needs.
        let mut request = Request::new(EmbedRequest {
            model: args.model.clone(),
            inputs: inputs.clone(),
            prompt_name: args.prompt_name.clone(),
            ..Default::default()
        });
        request.set_timeout(CALL_TIMEOUT);
        if let Some(value) = args
            .api_key
            .as_ref()
            .and_then(|key| format!("Bearer {key}").parse().ok())
        {
            request.metadata_mut().insert("authorization", value);
        }
        match client.embed(request).await {
            Ok(response) => return Ok((inputs.len(), u64::from(response.into_inner().cached))),
            Err(status)
                if matches!(status.code(), Code::ResourceExhausted | Code::Unavailable)
                    && retries < MAX_RETRIES =>
            {
                retries += 1;
                tokio::time::sleep(retry_after(&status)).await;
            }
            Err(status) => return Err(explain(&status, args)),
        }
    }
}

/// The server's `retry-after` trailer (seconds), else one second; capped so a bad value
/// cannot stall the run.
fn retry_after(status: &Status) -> Duration {
    let seconds = status
        .metadata()
        .get(citadel_proto::metadata::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds.clamp(1, 30))
}

/// The server's own message, plus the flag that usually fixes it.
fn explain(status: &Status, args: &WarmArgs) -> anyhow::Error {
    let param = status
        .metadata()
        .get(citadel_proto::metadata::ERROR_PARAM)
        .and_then(|v| v.to_str().ok());
    let fix = match (status.code(), param) {
        (Code::NotFound, _) => format!(": check --model (now {:?})", args.model),
        (Code::InvalidArgument, Some("prompt_name")) => ": check --prompt-name".to_string(),
        (Code::ResourceExhausted, _) => ": lower --concurrency or --batch-size".to_string(),
        (Code::DeadlineExceeded, _) => ": lower --batch-size".to_string(),
        // What a client sees when the server shuts down or restarts under it.
        (Code::Cancelled | Code::Unavailable, _) => {
            format!(
                ": is `citadel serve` still up at {}? run again",
                args.server
            )
        }
        _ => String::new(),
    };
    anyhow!(
        "citadel answered {:?}: {}{fix}",
        status.code(),
        status.message()
    )
}

/// A bar on a terminal; elsewhere (CI logs) a plain line every few seconds, since a redrawn
/// bar would be either invisible or one unreadable line per tick.
struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(total: usize, started: Instant) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            // indicatif's `{per_sec}` prints four decimals; whole texts per second read better.
            let style = ProgressStyle::with_template(
                "{bar:40} {human_pos}/{human_len} texts ({rate}/s, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}", state.per_sec());
                },
            );
            ProgressBar::new(total as u64).with_style(style)
        });
        Progress {
            bar,
            total,
            started,
            last_line: started,
        }
    }

    fn update(&mut self, done: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        } else if self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            let rate = done as f64 / self.started.elapsed().as_secs_f64();
            eprintln!("warmed {done}/{} ({rate:.0}/s)", self.total);
        }
    }
}

impl Drop for Progress {
    // Cleared on success and on error alike, so the summary or the error stands alone.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
