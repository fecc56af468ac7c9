//! The workflow store: one table that is both the record of every workflow and the queue.
//! `api.rs` holds what clients ask for (submit, get, list, cancel, retry); `queue.rs` what
//! workers do (claim, heartbeat, progress, finish, release, reap, purge).

mod api;
pub mod backup;
pub(crate) mod entity;
pub(crate) mod migration;
mod queue;
#[cfg(test)]
mod schema_tests;
mod writer;

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, FromQueryResult, Iterable,
    Statement, Value,
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::Notify;

use crate::Workflow;

pub use api::{CancelOutcome, QueueDepth};
pub(crate) use queue::{Finish, Lease};

/// What a store operation can fail with; mapped once, at the gRPC edge.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("workflow {0} not found")]
    NotFound(String),
    /// The workflow's state forbids the operation (cancel a finished one, retry a running one).
    #[error("{0}")]
    Conflict(String),
    /// An idempotency key came back with another kind or other parameters.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The database could not be reached or failed: worth retrying.
    #[error("the workflow database is unavailable: {0}")]
    Unavailable(String),
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// `RETURNING` with the entity's columns by name, never `*`. A `*` statement's columns are
/// counted when it is prepared, against the schema the connection last read; SQLite prepares
/// it again at its first step if a migration (this process's, at start, or a newer release's
/// while this one serves) has since added a column, and sqlx, which keeps the first count,
/// then reads past its column list and its worker thread panics (seen on CI: a connection
/// opened during the migrations, a claim whose workflow then never ran). Named columns are
/// the same count under every schema that has them.
pub(crate) static RETURNING: LazyLock<String> = LazyLock::new(|| {
    use sea_orm::Iden;
    let columns: Vec<String> = entity::Column::iter().map(|c| c.to_string()).collect();
    format!("RETURNING {}", columns.join(", "))
});

/// A handle on the workflow database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: DatabaseConnection,
    /// Every queue write goes through it, batched into shared transactions.
    pub(crate) writer: writer::Writer,
    /// Pinged after this process's writes, so the SQLite event tailer reads them at once.
    pub(crate) written: Arc<Notify>,
    pub(crate) result_ttl: Duration,
}

/// Connections to a SQLite file per process.
const SQLITE_CONNECTIONS: u32 = 6;
/// Concurrent write transactions per process on PostgreSQL.
const POSTGRES_WRITE_LANES: usize = 4;
/// No statement may hold a connection (or a row lock) longer than this on PostgreSQL.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

impl Store {
    /// Connects to `url` (`sqlite:...` or `postgres://...`) and brings the schema up to date.
    /// Several processes may do this at once. `max_connections` should leave room beside one
    /// connection per running task (progress writes) for claims, heartbeats and the API.
    pub async fn connect(
        url: &str,
        result_ttl: Duration,
        max_connections: u32,
    ) -> Result<Store, StoreError> {
        let mut options = ConnectOptions::new(url);
        // SQLite has one writer (our writer lane) and cheap reads: a few connections do.
        let max_connections = if url.starts_with("sqlite:") {
            max_connections.min(SQLITE_CONNECTIONS)
        } else {
            max_connections
        };
        options
            .max_connections(max_connections)
            .statement_timeout(STATEMENT_TIMEOUT)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            .sqlx_logging(false)
            // Every queue query is an ordered index scan with a LIMIT. Without statistics (a
            // fresh table, a burst of submits before autovacuum's first ANALYZE) the planner
            // picks a bitmap scan and sorts every due row for each claim instead: measured
            // here at 2.6 ms against 0.04 ms with 3,000 queued.
            .map_sqlx_postgres_opts(|o| o.options([("enable_bitmapscan", "off")]))
            .map_sqlx_sqlite_opts(|o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                // WAL lets readers run beside the one writer; NORMAL syncs at checkpoints,
                // which WAL keeps crash-safe (a power cut may lose the last commits, never
                // corrupt the file).
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    // Pages from memory instead of a read() each: a 64 MiB map, 16 MiB of
                    // cache per connection.
                    .pragma("mmap_size", "67108864")
                    .pragma("cache_size", "-16384")
            });
        let db = Database::connect(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", redact(url))))?;
        migrate(&db).await?;
        let written = Arc::new(Notify::new());
        let lanes = match db.get_database_backend() {
            DbBackend::Postgres => POSTGRES_WRITE_LANES,
            _ => 1,
        };
        Ok(Store {
            writer: writer::Writer::start(db.clone(), written.clone(), lanes),
            db,
            written,
            result_ttl,
        })
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub(crate) fn statement(&self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(self.backend(), sql, values)
    }

    /// Wakes this process's event tailer after a write (PostgreSQL needs no help).
    pub(crate) fn wrote(&self) {
        self.written.notify_one();
    }

    /// Runs a write that returns workflow rows through the batching writer.
    pub(crate) async fn write_rows(&self, stmt: Statement) -> Result<Vec<Workflow>, StoreError> {
        let rows = self.writer.rows(stmt).await?;
        let models = rows.iter().map(|row| Workflow::from_query_result(row, ""));
        Ok(models.collect::<Result<_, _>>()?)
    }
}

/// Runs the migrations. Two processes starting together may race on `CREATE`; every statement
/// is `IF NOT EXISTS`, so the loser's second pass finds the work done.
async fn migrate(db: &DatabaseConnection) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        match migration::Migrator::up(db, None).await {
            Ok(()) => return Ok(()),
            Err(e) if tries < 3 => {
                tries += 1;
                tracing::debug!(error = %e, "migration raced another process; trying again");
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
            Err(e) => return Err(StoreError::Unavailable(format!("migrations failed: {e}"))),
        }
    }
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}
