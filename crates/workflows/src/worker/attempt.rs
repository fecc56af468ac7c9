//! One attempt of one workflow: the task runs in its own tokio task (so a panic is a failure,
//! not a stuck lease) under the time limit, racing the stop signal; then the outcome is written,
//! fenced by the lease, retrying the write until the lease would have expired anyway.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tracing::Instrument;

use super::{
    Shared, StopReason,
    policy::{self, Ended},
};
use crate::{TaskContext, TaskError, Workflow, store::Lease};

/// Aborts the task when the attempt stops waiting for it (time limit, cancel, shutdown).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes the attempt from the running map when it ends, however it ends (a panic
/// included): an entry left behind would be heartbeaten forever.
struct Forget<'a> {
    shared: &'a Shared,
    lease: &'a Lease,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut running = self
            .shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Only our own entry: the same workflow may have been claimed again meanwhile.
        if running
            .get(&self.lease.id)
            .is_some_and(|r| r.lease == *self.lease)
        {
            running.remove(&self.lease.id);
        }
    }
}

/// The attempt under a `workflow.run` span, in the trace of the request that submitted it
/// (its stored `traceparent`), so an operator follows the work from the submit to its end.
pub(super) async fn run(shared: Arc<Shared>, workflow: Workflow, slot: super::Slot) {
    let span = citadel_telemetry::trace_span!("workflow.run", kind = %workflow.kind,
        attempt = workflow.attempts);
    if let Some(parent) = &workflow.trace_context {
        citadel_telemetry::trace::adopt_traceparent(&span, parent);
    }
    attempt(shared, workflow, slot).instrument(span).await;
}

async fn attempt(shared: Arc<Shared>, workflow: Workflow, slot: super::Slot) {
    let lease = Lease::of(&workflow, &shared.id);
    let _forget = Forget {
        shared: &shared,
        lease: &lease,
    };
    let (stop, reason) = {
        let running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.get(&workflow.id).filter(|r| r.lease == lease) {
            Some(r) => (r.stop.clone(), r.reason.clone()),
            None => return,
        }
    };
    let metrics = crate::metrics::metrics();
    let began = Instant::now();
    let waited = (workflow.started_us.unwrap_or_default()).saturating_sub(workflow.run_at_us);
    metrics.started(&workflow.kind, waited);
    let last = Arc::default();
    let ended = execute(&shared, &workflow, &lease, stop.clone(), Arc::clone(&last)).await;
    drop(slot);
    let ended = match (ended, reason.get()) {
        (Some(ended), _) => ended,
        (None, Some(StopReason::Cancel)) => Ended::Cancelled,
        (None, Some(StopReason::Shutdown)) => {
            release(&shared, &lease).await;
            metrics.ended(&workflow.kind, "released", began.elapsed());
            return;
        }
        (None, Some(StopReason::LeaseLost) | None) => {
            metrics.ended(&workflow.kind, "lost", began.elapsed());
            return;
        }
    };
    let mut finish = policy::finish(&workflow, ended);
    if finish.state == crate::State::Success {
        finish.progress = last.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
    metrics.ended(&workflow.kind, finish.state.as_str(), began.elapsed());
    tracing::info!(
        id = %workflow.id,
        kind = %workflow.kind,
        attempt = workflow.attempts,
        state = finish.state.as_str(),
        error = finish.error.as_deref().unwrap_or(""),
        "attempt ended"
    );
    write_outcome(&shared, &lease, &finish).await;
}

/// Runs the task; `None` when it was stopped (the stop reason says why).
async fn execute(
    shared: &Shared,
    workflow: &Workflow,
    lease: &Lease,
    stop: tokio_util::sync::CancellationToken,
    last: Arc<std::sync::Mutex<Option<(u64, u64, String)>>>,
) -> Option<Ended> {
    let Some(task) = shared.registry.get(&workflow.kind).cloned() else {
        let e = TaskError::permanent(format!("no task kind {:?} in this worker", workflow.kind));
        return Some(Ended::Failed(e));
    };
    let ctx = TaskContext {
        workflow_id: workflow.id.clone(),
        attempt: u32::try_from(workflow.attempts).unwrap_or(1),
        params: workflow.params_json(),
        checkpoint: workflow
            .checkpoint
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok()),
        store: shared.store.clone(),
        lease: lease.clone(),
        cancel: stop.clone(),
        last,
    };
    let limit_ms = workflow.time_limit_ms.max(1);
    let limit = Duration::from_millis(u64::try_from(limit_ms).unwrap_or(u64::MAX));
    let mut handle = AbortOnDrop(tokio::spawn(
        async move { task.run(ctx).await }.in_current_span(),
    ));
    tokio::select! {
        biased;
        () = stop.cancelled() => None,
        joined = tokio::time::timeout(limit, &mut handle.0) => Some(match joined {
            Ok(Ok(Ok(result))) => Ended::Succeeded(result),
            Ok(Ok(Err(e))) => Ended::Failed(e),
            Ok(Err(join)) => Ended::Failed(TaskError::permanent(format!("the task panicked: {join}"))),
            Err(_) => Ended::TimedOut { limit_ms },
        }),
    }
}

/// Writes the outcome; a database outage is waited out while the lease would still be ours.
async fn write_outcome(shared: &Shared, lease: &Lease, finish: &crate::store::Finish) {
    let give_up = Instant::now() + shared.settings.lease;
    let mut delay = Duration::from_millis(50);
    loop {
        match shared.store.finish(lease, finish).await {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!(id = %lease.id, "lease lost before the outcome was written");
                return;
            }
            Err(e) if Instant::now() + delay < give_up => {
                tracing::warn!(id = %lease.id, error = %e, "cannot record the outcome yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::error!(
                    id = %lease.id, error = %e,
                    "outcome not recorded before the lease expired; the workflow will run again"
                );
                return;
            }
        }
    }
}

async fn release(shared: &Shared, lease: &Lease) {
    match shared.store.release(lease).await {
        Ok(_) => tracing::info!(id = %lease.id, "attempt given back"),
        Err(e) => tracing::warn!(
            id = %lease.id, error = %e,
            "cannot give the attempt back; it is retried once its lease expires"
        ),
    }
}
