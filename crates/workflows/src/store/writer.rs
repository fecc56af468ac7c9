//! The store's writer: every queue write of this process (submits, claims, heartbeats,
//! progress, outcomes) goes through one queue to a few writer lanes, each applying whatever has
//! queued up as one transaction — group commit. Under load a commit (an fsync on PostgreSQL, the write
//! lock on SQLite) carries many workflows instead of one, and on SQLite the process's writes
//! never fight each other for the lock. Nothing waits on purpose: a batch is whatever arrived
//! while the previous one committed, so a lone write goes out at once.
//!
//! When a batch fails (a deadlock with another process, one bad statement), every write in it
//! is retried on its own, so one write's error is never another's.

use std::sync::Arc;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbErr, QueryResult, Statement, TransactionTrait,
};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

/// Writes per transaction, at most.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before callers wait to queue.
const QUEUE: usize = 4_096;

enum Write {
    /// A statement whose rows are wanted (`RETURNING`).
    Rows(Statement),
    /// A statement whose count of affected rows is wanted.
    Count(Statement),
}

enum Written {
    Rows(Vec<QueryResult>),
    Count(u64),
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Written, DbErr>>,
}

#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts `lanes` writer tasks sharing one queue; `wrote` is pinged after each commit.
    /// SQLite takes one lane (it has one write lock); PostgreSQL several, because one
    /// connection is one server process, one core, and its round trips add up.
    pub(crate) fn start(db: DatabaseConnection, wrote: Arc<Notify>, lanes: usize) -> Writer {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..lanes.max(1) {
            tokio::spawn(run(db.clone(), queue.clone(), wrote.clone()));
        }
        Writer { jobs }
    }

    /// Runs `stmt` in the next batch; its rows.
    pub(crate) async fn rows(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self.submit(Write::Rows(stmt)).await? {
            Written::Rows(rows) => Ok(rows),
            Written::Count(_) => Err(DbErr::Custom("the writer answered a count".into())),
        }
    }

    /// Runs `stmt` in the next batch; how many rows it changed.
    pub(crate) async fn count(&self, stmt: Statement) -> Result<u64, DbErr> {
        match self.submit(Write::Count(stmt)).await? {
            Written::Count(n) => Ok(n),
            Written::Rows(rows) => Ok(rows.len() as u64),
        }
    }

    async fn submit(&self, write: Write) -> Result<Written, DbErr> {
        let (reply, answer) = oneshot::channel();
        let gone = || DbErr::Custom("the workflow store's writer has stopped".into());
        self.jobs
            .send(Job { write, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(db: DatabaseConnection, queue: Arc<Mutex<mpsc::Receiver<Job>>>, wrote: Arc<Notify>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The next batch forms while this lane's transaction commits.
    while queue.lock().await.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() == 1 {
            for job in batch.drain(..) {
                let result = apply(&db, &job.write).await;
                let _ = job.reply.send(result);
            }
        } else {
            match in_one_transaction(&db, &batch).await {
                Ok(results) => {
                    for (job, result) in batch.drain(..).zip(results) {
                        let _ = job.reply.send(Ok(result));
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, writes = batch.len(), "batch failed; one by one");
                    for job in batch.drain(..) {
                        let result = apply(&db, &job.write).await;
                        let _ = job.reply.send(result);
                    }
                }
            }
        }
        wrote.notify_one();
    }
}

async fn in_one_transaction(db: &DatabaseConnection, batch: &[Job]) -> Result<Vec<Written>, DbErr> {
    let txn = db.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        results.push(apply(&txn, &job.write).await?);
    }
    txn.commit().await?;
    Ok(results)
}

async fn apply(db: &impl ConnectionTrait, write: &Write) -> Result<Written, DbErr> {
    match write {
        Write::Rows(stmt) => Ok(Written::Rows(db.query_all_raw(stmt.clone()).await?)),
        Write::Count(stmt) => Ok(Written::Count(
            db.execute_raw(stmt.clone()).await?.rows_affected(),
        )),
    }
}
