//! `citadel-vllm-standin`: a stand-in vLLM (OpenAI-compatible chat and text completions)
//! server for benchmarks. Prints `vllm standin listening on ADDR` once it accepts connections;
//! drive it from another process with `POST /_standin/behaviour` and `GET /_standin/stats`.

use std::net::SocketAddr;

use citadel_standin::llm::{LlmBehaviour, LlmModelSpec, LlmStandIn, LlmStandInConfig};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Stand-in vLLM server (/v1/chat/completions, /v1/completions, /v1/models)")]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// A served model as ID or ID=MAX_MODEL_LEN (default 4096); repeat for more.
    #[arg(long = "model", value_parser = parse_model, default_value = "standin-llm=4096")]
    models: Vec<LlmModelSpec>,
    /// Delay before the first chunk (and before unary answers), in milliseconds.
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Delay between chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    itl_ms: u64,
    /// Tokens to generate when a request sets no max_tokens (default 16).
    #[arg(long)]
    tokens: Option<u32>,
}

fn parse_model(spec: &str) -> Result<LlmModelSpec, String> {
    let (id, len) = match spec.split_once('=') {
        Some((id, len)) => {
            let len = len
                .parse()
                .map_err(|_| format!("max_model_len in {spec:?} must be a positive integer"))?;
            (id, len)
        }
        None => (spec, 4096),
    };
    if id.is_empty() {
        return Err(format!("expected ID[=MAX_MODEL_LEN], got {spec:?}"));
    }
    Ok(LlmModelSpec::new(id, len))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One worker: benchmarks compare the gateway against this baseline, so keep it frugal.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = LlmStandInConfig {
            models: args.models,
        };
        let standin = LlmStandIn::start_on(args.addr, config).await?;
        standin.set_behaviour(LlmBehaviour {
            ttft_ms: args.ttft_ms,
            itl_ms: args.itl_ms,
            tokens: args.tokens,
            ..LlmBehaviour::default()
        });
        println!("vllm standin listening on {}", standin.addr);
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
