//! `citadel-standin`: a stand-in Ollama / OpenAI-compatible embedding server for benchmarks.
//! Prints `standin listening on ADDR` once it accepts connections.

use std::{collections::HashMap, net::SocketAddr};

use citadel_standin::{StandIn, StandInConfig};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Stand-in embedding server (Ollama /api/embed, OpenAI /v1/embeddings)")]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// A served model as NAME=DIMENSIONS; repeat for more.
    #[arg(long = "model", value_parser = parse_model, default_value = "all-minilm=384")]
    models: Vec<(String, usize)>,
}

fn parse_model(spec: &str) -> Result<(String, usize), String> {
    let (name, dims) = spec
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=DIMENSIONS, got {spec:?}"))?;
    let dims = dims
        .parse()
        .map_err(|_| format!("dimensions in {spec:?} must be a positive integer"))?;
    Ok((name.to_string(), dims))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let models: HashMap<String, usize> = args.models.into_iter().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let standin = StandIn::start_on(args.addr, StandInConfig { models }).await?;
        println!("standin listening on {}", standin.addr);
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
