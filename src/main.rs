//! `citadel`: the Citadel Orchestrator binary.
//!
//! `citadel serve` runs the REST edge, the gRPC mesh, the in-process models and a workflow
//! worker in one process; `citadel worker` runs workflows alone (`worker.rs`, its operations
//! port in `ops.rs`); `citadel config check` validates a configuration without connecting
//! anywhere; `citadel doctor` checks it and every server it names (`doctor.rs`); `citadel
//! cache warm` fills a running server's cache (`warm.rs`); `citadel backup`/`restore` copy the
//! state (`backup.rs`); `citadel workflows purge` (`maintenance.rs`); `citadel cache stats` and
//! `cache flush` (`cache_stats.rs`, `cache_flush.rs`). This file owns the
//! command line only; wiring lives in `serve.rs`.

#![forbid(unsafe_code)]

mod auth;
mod backup;
mod cache_flush;
mod cache_stats;
mod doctor;
mod keys;
mod llm;
mod maintenance;
mod models;
mod ops;
mod process;
mod reload;
mod serve;
mod vectors;
mod warm;
mod worker;
mod workflows;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use citadel_config::{Config, ConfigError, Overrides};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "citadel",
    version,
    about = "Citadel Orchestrator: embeddings and workflows over a gRPC mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the REST edge, the gRPC services and the in-process models in one process.
    Serve(ServeArgs),
    /// Run workflows from the shared database (`database.url`) until SIGTERM.
    Worker(WorkerArgs),
    /// Work with the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work with a running server's embedding cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Create, list and revoke API keys (in `database.url`).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Maintain the workflow database.
    #[command(subcommand)]
    Workflows(maintenance::WorkflowsCommand),
    /// Check the configuration, then every server it names, with the fix for each failure.
    Doctor(doctor::DoctorArgs),
    /// Copy the workflow database and the embedded vector store into one file, online.
    Backup(backup::BackupArgs),
    /// Put a backup in place of the workflow database and the embedded vector store.
    Restore(backup::RestoreArgs),
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Embed every text of FILE through a running server's gRPC API, so its cache holds them.
    Warm(warm::WarmArgs),
    /// Print a running server's cache statistics (mode, hit rate, each level).
    Stats(cache_stats::StatsArgs),
    /// Drop one model's cached vectors from a running server's memory and the shared Redis.
    Flush(cache_flush::FlushArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (secrets masked) and fail on the first bad key.
    /// Never connects to anything it names.
    Check(ConfigArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// A TOML file layered over the embedded defaults (and over the CITADEL_ENV profile).
    #[arg(long, env = "CITADEL_CONFIG")]
    config: Option<PathBuf>,
    /// Profile: also loads config/<ENV>.toml (development, production).
    #[arg(long, env = "CITADEL_ENV")]
    env: Option<String>,
    /// REST listen address (overrides http.addr).
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// gRPC listen address (overrides grpc.addr).
    #[arg(long)]
    grpc_addr: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Tasks run at once (overrides workflows.concurrency).
    #[arg(long)]
    concurrency: Option<usize>,
}

impl ConfigArgs {
    pub(crate) fn load(&self) -> Result<Config, ConfigError> {
        let overrides = Overrides {
            config_file: self.config.clone(),
            env: self.env.clone(),
            config_dir: None,
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
        };
        // Said before logging starts (it needs the configuration), on stderr like any
        // start-up message; the process goes on.
        for name in citadel_config::ignored_vars(std::env::vars()) {
            eprintln!(
                "warning: {name} is not a configuration key (those are CITADEL_<SECTION>__<KEY>, \
                 e.g. CITADEL_HTTP__ADDR); ignored"
            );
        }
        citadel_config::load(&overrides, std::env::vars())
    }
}

fn main() -> ExitCode {
    citadel_conn::install_default_crypto();
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Check(args)) => config_check(&args),
        Command::Cache(CacheCommand::Warm(args)) => warm::run(&args),
        Command::Cache(CacheCommand::Stats(args)) => cache_stats::run(&args),
        Command::Cache(CacheCommand::Flush(args)) => cache_flush::run(&args),
        Command::Keys(command) => keys::run(command),
        Command::Doctor(args) => doctor::run(&args),
        Command::Workflows(command) => maintenance::run(command),
        Command::Backup(args) => backup::backup(&args),
        Command::Restore(args) => backup::restore(&args),
        Command::Serve(args) => match args.config.load() {
            Ok(config) => serve::run(config, Box::new(move || args.config.load())),
            Err(e) => fail(&e),
        },
        Command::Worker(args) => match args.config.load() {
            Ok(config) => {
                let concurrency = args.concurrency;
                worker::run(config, concurrency, Box::new(move || args.config.load()))
            }
            Err(e) => fail(&e),
        },
    }
}

fn config_check(args: &ConfigArgs) -> ExitCode {
    match args.load() {
        Ok(config) => {
            // Roles and permission names are the policy's vocabulary: checked there.
            if let Err(e) = citadel_auth::Roles::from_config(&config.auth) {
                return fail(&e);
            }
            match serde_json::to_string_pretty(&config.redacted_json()) {
                Ok(text) => println!("{text}"),
                Err(e) => return fail(&e),
            }
            eprintln!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

pub(crate) fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
