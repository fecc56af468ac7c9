//! The schema, as sea-orm migrations. The table is plain SQL both databases accept; the event
//! triggers differ: PostgreSQL NOTIFYs (delivered at commit, in commit order), SQLite appends to
//! a `workflow_events` outbox that readers tail by sequence number (SQLite serialises writers,
//! so sequence order is commit order). Either way the event is part of the same transaction as
//! the change: no change without its event, no event for a change that rolled back.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager, async_trait};

/// The NOTIFY channel of workflow events on PostgreSQL.
pub(crate) const CHANNEL: &str = "citadel_workflows";

pub(crate) struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateWorkflows),
            Box::new(AddCheckpoint),
            Box::new(AddOwner),
            Box::new(AddTraceContext),
        ]
    }
}

/// A task's checkpoint: what an attempt finished, so a retry resumes instead of redoing it
/// (`TaskContext::save_checkpoint`). Not an event: the version is untouched. Kept through
/// failures (a manual retry resumes too), dropped on SUCCESS.
struct AddCheckpoint;

impl MigrationName for AddCheckpoint {
    fn name(&self) -> &str {
        "m20261201_000002_add_checkpoint"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddCheckpoint {
    async fn up(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE workflows ADD COLUMN checkpoint TEXT")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE workflows DROP COLUMN checkpoint")
            .await?;
        Ok(())
    }
}

/// The submit's W3C `traceparent` (with traces on), so the worker's run of it joins the trace
/// that asked for it. Not an event.
struct AddTraceContext;

impl MigrationName for AddTraceContext {
    fn name(&self) -> &str {
        "m20261202_000004_add_trace_context"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddTraceContext {
    async fn up(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE workflows ADD COLUMN trace_context TEXT")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE workflows DROP COLUMN trace_context")
            .await?;
        Ok(())
    }
}

/// Who submitted each workflow, for ownership: listed by owner, newest first, and carried
/// on every event so a watcher sees only its own. The triggers are redefined with the field.
struct AddOwner;

impl MigrationName for AddOwner {
    fn name(&self) -> &str {
        "m20261201_000003_add_owner"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddOwner {
    async fn up(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE workflows ADD COLUMN owner TEXT")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS workflows_owner ON workflows (owner, created_us, id) \
             WHERE owner IS NOT NULL",
        )
        .await?;
        let fields = format!("{}, 'owner', NEW.owner", event_fields("substr"));
        let statements = match db.get_database_backend() {
            DbBackend::Postgres => vec![postgres_function(&fields)],
            _ => {
                let mut all = vec![
                    "DROP TRIGGER IF EXISTS workflows_event_insert".to_string(),
                    "DROP TRIGGER IF EXISTS workflows_event_update".to_string(),
                ];
                all.extend(sqlite_triggers(&fields));
                all
            }
        };
        for sql in statements {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE workflows DROP COLUMN owner")
            .await?;
        Ok(())
    }
}

struct CreateWorkflows;

impl MigrationName for CreateWorkflows {
    fn name(&self) -> &str {
        "m20261121_000001_create_workflows"
    }
}

const TABLE: &str = "CREATE TABLE IF NOT EXISTS workflows (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    initial_backoff_ms BIGINT NOT NULL,
    max_backoff_ms BIGINT NOT NULL,
    time_limit_ms BIGINT NOT NULL,
    idempotency_key TEXT,
    progress_done BIGINT NOT NULL DEFAULT 0,
    progress_total BIGINT NOT NULL DEFAULT 0,
    progress_message TEXT NOT NULL DEFAULT '',
    result TEXT,
    error TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    worker TEXT,
    lease_expires_us BIGINT,
    created_us BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    run_at_us BIGINT NOT NULL,
    started_us BIGINT,
    finished_us BIGINT,
    expires_us BIGINT,
    version BIGINT NOT NULL DEFAULT 0
)";

/// Partial indexes: a state change that is not an index's business adds nothing to it, and
/// every update changes `state` or `updated_us`, so (on PostgreSQL) every update writes a new
/// entry into every index whose predicate the row matches. Four per update at most.
const INDEXES: &[&str] = &[
    // Claims: due work, highest priority first, then oldest.
    "CREATE INDEX IF NOT EXISTS workflows_due ON workflows (priority DESC, run_at_us, created_us) \
     WHERE state IN ('PENDING', 'RETRY')",
    // The reaper: running attempts by lease expiry.
    "CREATE INDEX IF NOT EXISTS workflows_lease ON workflows (lease_expires_us) \
     WHERE state = 'STARTED'",
    // List, newest first, and its cursor.
    "CREATE INDEX IF NOT EXISTS workflows_created ON workflows (created_us, id)",
    // Result expiry: finished workflows only.
    "CREATE INDEX IF NOT EXISTS workflows_expires ON workflows (expires_us) \
     WHERE expires_us IS NOT NULL",
    // Idempotency keys, where given (most submits have none).
    "CREATE UNIQUE INDEX IF NOT EXISTS workflows_idempotency_key ON workflows (idempotency_key) \
     WHERE idempotency_key IS NOT NULL",
];

/// The event's fields, shared by both backends' triggers; `cut` truncates long text. The cuts
/// keep a NOTIFY payload under PostgreSQL's 8000 bytes even when every character is escaped
/// (6 bytes each): 900 + 200 characters at most, with room for the rest.
fn event_fields(cut: &str) -> String {
    format!(
        "'id', NEW.id, 'kind', NEW.kind, 'state', NEW.state, 'attempts', NEW.attempts, \
         'done', NEW.progress_done, 'total', NEW.progress_total, \
         'message', {cut}(NEW.progress_message, 1, 200), 'error', {cut}(NEW.error, 1, 900), \
         'cancel_requested', NEW.cancel_requested, 'worker', NEW.worker, \
         'at_us', NEW.updated_us, 'version', NEW.version"
    )
}

fn postgres_function(fields: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION citadel_workflow_event() RETURNS trigger AS $$
         BEGIN
           PERFORM pg_notify('{CHANNEL}', json_build_object({fields})::text);
           RETURN NULL;
         END $$ LANGUAGE plpgsql"
    )
}

fn postgres_events() -> Vec<String> {
    vec![
        postgres_function(&event_fields("substr")),
        "DROP TRIGGER IF EXISTS workflows_event ON workflows".to_string(),
        // Results (vectors, mostly) do not compress well: storing them as they are saves the
        // CPU of compressing every one on the write path.
        "ALTER TABLE workflows ALTER COLUMN result SET STORAGE EXTERNAL".to_string(),
        "CREATE TRIGGER workflows_event AFTER INSERT OR UPDATE OF version ON workflows \
         FOR EACH ROW EXECUTE FUNCTION citadel_workflow_event()"
            .to_string(),
    ]
}

fn sqlite_triggers(fields: &str) -> Vec<String> {
    let insert = format!(
        "INSERT INTO workflow_events (at_us, payload) VALUES (NEW.updated_us, json_object({fields}))"
    );
    vec![
        format!(
            "CREATE TRIGGER IF NOT EXISTS workflows_event_insert AFTER INSERT ON workflows \
             BEGIN {insert}; END"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS workflows_event_update AFTER UPDATE OF version \
             ON workflows BEGIN {insert}; END"
        ),
    ]
}

fn sqlite_events() -> Vec<String> {
    let mut all = vec![
        "CREATE TABLE IF NOT EXISTS workflow_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at_us BIGINT NOT NULL,
            payload TEXT NOT NULL
        )"
        .to_string(),
        "CREATE INDEX IF NOT EXISTS workflow_events_at ON workflow_events (at_us)".to_string(),
    ];
    all.extend(sqlite_triggers(&event_fields("substr")));
    all
}

#[async_trait::async_trait]
impl MigrationTrait for CreateWorkflows {
    async fn up(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
        let db = manager.get_connection();
        let events = match db.get_database_backend() {
            DbBackend::Postgres => postgres_events(),
            _ => sqlite_events(),
        };
        let statements = std::iter::once(TABLE.to_string())
            .chain(INDEXES.iter().map(|s| (*s).to_string()))
            .chain(events);
        for sql in statements {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP TABLE IF EXISTS workflow_events")
            .await?;
        db.execute_unprepared("DROP TABLE IF EXISTS workflows")
            .await?;
        Ok(())
    }
}
