//! `citadel worker`: runs workflows from the shared database, and serves nothing but its
//! operations port (`ops.rs`). Any number of these may run on any number of machines beside
//! `citadel serve`.

use std::{process::ExitCode, time::Duration};

use citadel_config::Config;
use citadel_telemetry::MetricsHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{serve::loopback_url, workflows::Workflows};

pub fn run(config: Config, concurrency: Option<usize>, load: crate::reload::Loader) -> ExitCode {
    let settings = config.clone();
    let work = work(config, concurrency);
    // A worker holds nothing a reload swaps beyond the log level.
    let live = std::sync::Arc::default();
    crate::process::run_logged(&settings, "citadel worker", load, live, work)
}

async fn work(config: Config, concurrency: Option<usize>) -> anyhow::Result<()> {
    let shutdown = crate::serve::shutdown_signal()?;
    let metrics = MetricsHandle::install()?;
    let concurrency = concurrency.unwrap_or(config.workflows.concurrency);
    anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
    // The EmbeddingService this worker's embedding kinds call.
    let embeddings = match (&config.workflows.embeddings_url, &config.grpc.upstream) {
        (url, _) if !url.is_empty() => url.clone(),
        (_, url) if !url.is_empty() => url.clone(),
        _ => loopback_url(config.grpc.addr),
    };
    let workflows = Workflows::open(&config, &embeddings, concurrency).await?;
    let monitor_every = Duration::from_millis(config.workflows.monitor_interval_ms);
    let (database, monitor) = workflows.store.monitor(monitor_every);
    let stopping = CancellationToken::new();
    let (ops, ops_addr) =
        crate::ops::start(&config, metrics, database, concurrency, stopping.clone()).await?;
    let (mut task, stop) = workflows.spawn_worker(&config, concurrency);
    tracing::info!(concurrency, %embeddings, %ops_addr, "citadel worker ready");
    tokio::select! {
        () = shutdown => {
            tracing::info!("shutdown requested: finishing running workflows");
            stopping.cancel();
            let _ = stop.send(());
            task.await?;
        }
        result = &mut task => result?,
    }
    monitor.abort();
    let deadline = Instant::now() + Duration::from_millis(config.shutdown.drain_timeout_ms);
    ops.drain(deadline).await;
    Ok(())
}
