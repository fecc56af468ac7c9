//! Copies of the workflow database (which also holds the API keys) for `citadel backup` and
//! `citadel restore`. SQLite is copied online by `VACUUM INTO`: one read transaction, so the
//! copy holds exactly what was committed when it began, while `serve` goes on writing.
//! PostgreSQL goes through its own tools, `pg_dump` and `pg_restore` in the custom format.
//! This file knows databases only, not the archive the copy travels in.

use std::path::{Path, PathBuf};

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

use super::{StoreError, redact};

/// Where `database.url` keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseLocation {
    pub fn of(url: &str) -> Result<DatabaseLocation, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseLocation::Postgres(url.to_string()));
        }
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                StoreError::InvalidArgument(format!(
                    "database.url {} is neither sqlite: nor postgres://",
                    redact(url)
                ))
            })?;
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path.starts_with(":memory:") {
            return Err(StoreError::InvalidArgument(
                "database.url is an in-memory SQLite database: there is nothing on disk to \
                 back up or restore"
                    .into(),
            ));
        }
        Ok(DatabaseLocation::Sqlite(PathBuf::from(path)))
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            DatabaseLocation::Sqlite(_) => "sqlite",
            DatabaseLocation::Postgres(_) => "postgres",
        }
    }
}

async fn open(url: &str) -> Result<DatabaseConnection, StoreError> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(1)
        .sqlx_logging(false)
        .connect_timeout(std::time::Duration::from_secs(5));
    Database::connect(options)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", redact(url))))
}

/// Writes a consistent copy of the database to `to` (which must not exist).
pub async fn snapshot(location: &DatabaseLocation, url: &str, to: &Path) -> Result<(), StoreError> {
    match location {
        DatabaseLocation::Sqlite(path) => {
            if !path.is_file() {
                return Err(StoreError::NotFound(format!(
                    "{} (database.url): no such database file",
                    path.display()
                )));
            }
            let db = open(url).await?;
            let target = to.display().to_string().replace('\'', "''");
            db.execute_unprepared(&format!("VACUUM INTO '{target}'"))
                .await
                .map_err(|e| StoreError::Unavailable(format!("VACUUM INTO failed: {e}")))?;
            db.close().await.ok();
            Ok(())
        }
        DatabaseLocation::Postgres(url) => {
            run_tool(
                "pg_dump",
                &[
                    "--format=custom",
                    "--no-owner",
                    &format!("--file={}", to.display()),
                    &format!("--dbname={url}"),
                ],
            )
            .await
        }
    }
}

/// Workflows in the database at `url`; `None` when it holds no workflow table (a new one).
pub async fn workflow_count(url: &str) -> Result<Option<u64>, StoreError> {
    if let Ok(DatabaseLocation::Sqlite(path)) = DatabaseLocation::of(url)
        && !path.exists()
    {
        return Ok(None);
    }
    let db = open(url).await?;
    let sql = sea_orm::Statement::from_string(
        db.get_database_backend(),
        "SELECT COUNT(*) AS n FROM workflows",
    );
    let count = match db.query_one_raw(sql).await {
        Ok(Some(row)) => Some(u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0)),
        Ok(None) => Some(0),
        // No such table: nothing was ever stored there.
        Err(_) => None,
    };
    db.close().await.ok();
    Ok(count)
}

/// Puts the copy at `from` in place of the database at `url`. The caller has checked that
/// the target may be overwritten and that nothing is using it.
pub async fn restore(location: &DatabaseLocation, from: &Path) -> Result<(), StoreError> {
    match location {
        DatabaseLocation::Sqlite(path) => {
            let io = |what: &str, p: &Path, e: std::io::Error| {
                StoreError::Unavailable(format!("cannot {what} {}: {e}", p.display()))
            };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
            }
            let staged = path.with_extension("restoring");
            std::fs::copy(from, &staged).map_err(|e| io("write", &staged, e))?;
            std::fs::File::open(&staged)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("sync", &staged, e))?;
            // A write-ahead log left by the old database would be replayed into the new one.
            for suffix in ["-wal", "-shm"] {
                let side = PathBuf::from(format!("{}{suffix}", path.display()));
                match std::fs::remove_file(&side) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io("remove", &side, e));
                    }
                    _ => {}
                }
            }
            std::fs::rename(&staged, path).map_err(|e| io("rename", path, e))
        }
        DatabaseLocation::Postgres(url) => {
            run_tool(
                "pg_restore",
                &[
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--single-transaction",
                    "--exit-on-error",
                    &format!("--dbname={url}"),
                    &from.display().to_string(),
                ],
            )
            .await
        }
    }
}

async fn run_tool(tool: &str, args: &[&str]) -> Result<(), StoreError> {
    let output = tokio::process::Command::new(tool)
        .args(args)
        .output()
        .await
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot run {tool}: {e} (install PostgreSQL's client tools, e.g. \
                 `apt-get install postgresql-client`, in a version at least the server's)"
            ))
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(StoreError::Unavailable(format!(
        "{tool} failed ({}): {}",
        output.status,
        stderr.trim()
    )))
}
