//! `citadel cache stats`: a running server's embedding cache, as its `GetCacheStatus` RPC
//! reports it: the mode, the hit rate since start, and each level's state, hits, misses,
//! errors and (L1) size. One call, so it is cheap enough to run from a cron job or by hand.

use std::process::ExitCode;

use citadel_proto::v1::{CacheLevel, GetCacheStatusRequest};
use clap::Args;
use tonic::Request;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// gRPC address of the running `citadel serve`.
    #[arg(long, env = "CITADEL_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// A Citadel API key (or Clerk session token) for a server with `auth.mode = "required"`.
    #[arg(long, env = "CITADEL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &StatsArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return crate::fail(&e),
    };
    match runtime.block_on(stats(args)) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => crate::fail(&format!("{e:#}")),
    }
}

/// `message` as a request carrying `api_key` as its bearer credential, when there is one.
pub(crate) fn with_key<T>(message: T, api_key: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = api_key.and_then(|key| format!("Bearer {key}").parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

async fn stats(args: &StatsArgs) -> anyhow::Result<String> {
    let mut client = crate::warm::connect(&args.server).await?;
    let request = with_key(GetCacheStatusRequest {}, args.api_key.as_deref());
    let status = client
        .get_cache_status(request)
        .await
        .map_err(|s| anyhow::anyhow!("GetCacheStatus: {}: {}", s.code(), s.message()))?
        .into_inner();
    let level = |l: &Option<CacheLevel>| {
        let l = l.clone().unwrap_or_default();
        serde_json::json!({"state": l.state, "hits": l.hits, "misses": l.misses,
            "errors": l.errors, "entries": l.entries, "bytes": l.bytes, "last_error": l.last_error})
    };
    if args.json {
        let body = serde_json::json!({
            "mode": status.mode, "hit_rate": status.hit_rate, "ttl_seconds": status.ttl_seconds,
            "l1": level(&status.l1), "l2": level(&status.l2),
        });
        return Ok(serde_json::to_string_pretty(&body)?);
    }
    let mut out = format!(
        "mode {}, hit rate {:.1} % since start, entries live {} s\n",
        status.mode,
        status.hit_rate * 100.0,
        status.ttl_seconds
    );
    for (name, l) in [("L1 (memory)", &status.l1), ("L2 (Redis)", &status.l2)] {
        let l = l.clone().unwrap_or_default();
        out.push_str(&format!(
            "{name:<12} {:<9} hits {:>10}  misses {:>10}  errors {:>6}",
            l.state, l.hits, l.misses, l.errors
        ));
        if l.entries > 0 || l.bytes > 0 {
            #[allow(clippy::cast_precision_loss)]
            let mib = l.bytes as f64 / 1_048_576.0;
            out.push_str(&format!("  entries {}  {mib:.1} MiB", l.entries));
        }
        if !l.last_error.is_empty() {
            out.push_str(&format!("  last error: {}", l.last_error));
        }
        out.push('\n');
    }
    Ok(out.trim_end().to_string())
}
