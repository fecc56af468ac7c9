//! `citadel workflows purge`: deletes finished workflows past their expiry now, instead of at
//! a worker's next sweep (every minute at most). Safe beside running servers and workers: it
//! is the same statement their sweeps run.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use citadel_workflows::Store;

use crate::ConfigArgs;

#[derive(Debug, clap::Subcommand)]
pub enum WorkflowsCommand {
    /// Delete finished workflows whose results have expired (`workflows.result_ttl_secs`).
    Purge(ConfigArgs),
}

pub fn run(command: WorkflowsCommand) -> ExitCode {
    let WorkflowsCommand::Purge(args) = command;
    let config = match args.load() {
        Ok(config) => config,
        Err(e) => return crate::fail(&e),
    };
    let work = async {
        let ttl = Duration::from_secs(config.workflows.result_ttl_secs);
        let store = Store::connect(&config.database.url, ttl, 2)
            .await
            .context("database.url")?;
        let deleted = store.purge_expired().await.context("database.url")?;
        anyhow::Ok(deleted)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime
        .map_err(anyhow::Error::from)
        .and_then(|r| r.block_on(work))
    {
        Ok(deleted) => {
            println!("deleted {deleted} expired workflows");
            ExitCode::SUCCESS
        }
        Err(e) => crate::fail(&format!("{e:#}")),
    }
}
