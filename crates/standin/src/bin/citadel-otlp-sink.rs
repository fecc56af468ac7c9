//! `citadel-otlp-sink`: a stand-in OTLP/gRPC collector for benchmarks. It accepts every span
//! and keeps only their count. Prints `otlp sink listening on ADDR` once it accepts connections,
//! then `received N spans` each second while the count grows.

use std::{net::SocketAddr, time::Duration};

use citadel_standin::OtlpStandIn;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Stand-in OTLP/gRPC trace collector that counts spans")]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sink = OtlpStandIn::sink(args.addr).await?;
    println!("otlp sink listening on {}", sink.addr);
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let count = sink.count();
        if count != last {
            println!("received {count} spans");
            last = count;
        }
    }
}
