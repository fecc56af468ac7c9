//! `citadel cache flush --model M`: drops one model's cached vectors through a running server's
//! `FlushCache` RPC, so the server clears its own memory as well as the shared Redis. Progress
//! goes to stderr as Redis is worked through; the summary to stdout.

use std::{process::ExitCode, time::Instant};

use citadel_proto::v1::FlushCacheRequest;
use clap::Args;

#[derive(Debug, Args)]
pub struct FlushArgs {
    /// The model (name or alias) whose vectors to drop; every revision and option of it.
    #[arg(long)]
    model: String,
    /// gRPC address of the running `citadel serve`; give it once per replica, since each holds
    /// its own in-memory copy (Redis is shared and flushed by the first).
    #[arg(long, env = "CITADEL_SERVER", default_value = "http://127.0.0.1:50051")]
    server: Vec<String>,
    /// A Citadel API key (or Clerk session token) with `cache:manage`.
    #[arg(long, env = "CITADEL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

pub fn run(args: &FlushArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return crate::fail(&e),
    };
    // Every replica is tried: one that fails must not leave the others' memory unflushed.
    let mut failed = Vec::new();
    for server in &args.server {
        match runtime.block_on(flush(server, args)) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {server}: {e:#}");
                failed.push(server.as_str());
            }
        }
    }
    match failed.is_empty() {
        true => ExitCode::SUCCESS,
        false => crate::fail(&format!(
            "the flush did not finish on {}: run it again for those",
            failed.join(", ")
        )),
    }
}

async fn flush(server: &str, args: &FlushArgs) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut client = crate::warm::connect(server).await?;
    let request = FlushCacheRequest {
        model: args.model.clone(),
    };
    let request = crate::cache_stats::with_key(request, args.api_key.as_deref());
    let status = |s: tonic::Status| anyhow::anyhow!("FlushCache: {}: {}", s.code(), s.message());
    let mut stream = client
        .flush_cache(request)
        .await
        .map_err(status)?
        .into_inner();
    while let Some(progress) = stream.message().await.map_err(status)? {
        if progress.done {
            return Ok(format!(
                "flushed `{}` on {server}: {} Redis keys deleted, memory cleared ({:.1} s)",
                progress.model,
                progress.deleted,
                started.elapsed().as_secs_f64()
            ));
        }
        eprintln!(
            "flushing `{}`: {} keys deleted so far",
            progress.model, progress.deleted
        );
    }
    anyhow::bail!("{server} ended the flush without saying it finished: run it again")
}
