//! `citadel keys create|list|revoke`: Citadel's API keys in the metadata database
//! (`database.url`). A new key is printed once, alone on the last line of stdout; only its
//! hash is stored.

use std::{process::ExitCode, time::Duration};

use citadel_auth::{KeyStore, NewKey, Roles};
use clap::{Args, Subcommand};

use crate::ConfigArgs;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it once, on the last line of stdout.
    Create(CreateArgs),
    /// Every key (never the secret), newest first.
    List(ListArgs),
    /// Revoke a key by name or id; every server stops accepting it within 5 s.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// A name to list and revoke it by (unique among active keys).
    #[arg(long)]
    name: String,
    /// Its role: viewer, member, admin, or one from [auth.roles].
    #[arg(long)]
    role: String,
    /// Only these models (comma-separated names or aliases, as callers will write them).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Requests per minute (0: the role's default).
    #[arg(long, default_value_t = 0)]
    rpm: u64,
    /// Tokens per minute (0: the role's default).
    #[arg(long, default_value_t = 0)]
    tpm: u64,
    /// Expiry, e.g. 30d, 12h, 90m, 3600s.
    #[arg(long, value_parser = parse_duration)]
    expires_in: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The key's name or id.
    key: String,
}

pub fn run(command: KeysCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return crate::fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(execute(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::fail(&format!("{e:#}")),
    }
}

async fn execute(command: KeysCommand) -> anyhow::Result<()> {
    let config = match &command {
        KeysCommand::Create(a) => a.config.load()?,
        KeysCommand::List(a) => a.config.load()?,
        KeysCommand::Revoke(a) => a.config.load()?,
    };
    let store = KeyStore::connect(&config.database.url)
        .await
        .map_err(|e| anyhow::anyhow!("database.url: {e}"))?;
    match command {
        KeysCommand::Create(args) => {
            let roles = Roles::from_config(&config.auth).map_err(anyhow::Error::msg)?;
            if roles.get(&args.role).is_none() {
                anyhow::bail!(
                    "--role {}: not a role here (known: {})",
                    args.role,
                    roles.names().join(", ")
                );
            }
            let new = NewKey {
                name: args.name,
                role: args.role,
                models: args.models,
                rpm: args.rpm,
                tpm: args.tpm,
                expires_in: args.expires_in,
            };
            let (record, key) = store.create(&new).await?;
            eprintln!(
                "created key {} ({}), role {}; it is shown once, below: store it now",
                record.name, record.id, record.role
            );
            println!("{key}");
        }
        KeysCommand::List(_) => {
            let keys = store.list().await?;
            println!(
                "{:<14} {:<24} {:<10} {:>6} {:>8}  status",
                "id", "name", "role", "rpm", "tpm"
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            for k in keys {
                let status = match (k.revoked_us, k.expires_us) {
                    (Some(_), _) => "revoked".to_string(),
                    (None, Some(e)) if e <= now => "expired".to_string(),
                    (None, Some(e)) => format!("expires in {}h", (e - now) / 3_600_000_000),
                    (None, None) => "active".to_string(),
                };
                let models = k.model_list().map(|m| format!(" models={}", m.join(",")));
                println!(
                    "{:<14} {:<24} {:<10} {:>6} {:>8}  {status}{}",
                    k.id,
                    k.name,
                    k.role,
                    k.rpm,
                    k.tpm,
                    models.unwrap_or_default()
                );
            }
        }
        KeysCommand::Revoke(args) => {
            let record = store.revoke(&args.key).await?;
            println!("revoked key {} ({})", record.name, record.id);
        }
    }
    Ok(())
}

/// `30d`, `12h`, `90m`, `3600s` (or plain seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: use e.g. 30d, 12h, 90m or 3600s"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{unit}` is not a unit: use d, h, m or s")),
    };
    match n.checked_mul(secs) {
        Some(s) if s > 0 => Ok(Duration::from_secs(s)),
        _ => Err(format!("`{text}` must be a positive duration")),
    }
}
