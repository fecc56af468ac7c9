//! `citadel worker`: runs workflows from the shared database, without serving anything. Any
//! number of these may run on any number of machines beside `citadel serve`.

use std::process::ExitCode;

use citadel_config::Config;

use crate::{serve::loopback_url, workflows::Workflows};

pub fn run(config: Config, concurrency: Option<usize>) -> ExitCode {
    let log = config.log.clone();
    crate::process::run_logged(&log, "citadel worker", work(config, concurrency))
}

async fn work(config: Config, concurrency: Option<usize>) -> anyhow::Result<()> {
    let shutdown = crate::serve::shutdown_signal()?;
    let concurrency = concurrency.unwrap_or(config.workflows.concurrency);
    anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
    // The EmbeddingService this worker's embedding kinds call.
    let embeddings = match (&config.workflows.embeddings_url, &config.grpc.upstream) {
        (url, _) if !url.is_empty() => url.clone(),
        (_, url) if !url.is_empty() => url.clone(),
        _ => loopback_url(config.grpc.addr),
    };
    let workflows = Workflows::open(&config, &embeddings, concurrency).await?;
    let (mut task, stop) = workflows.spawn_worker(&config, concurrency);
    tracing::info!(concurrency, %embeddings, "citadel worker ready");
    tokio::select! {
        () = shutdown => {
            tracing::info!("shutdown requested: finishing running workflows");
            let _ = stop.send(());
            task.await?;
        }
        result = &mut task => result?,
    }
    Ok(())
}
