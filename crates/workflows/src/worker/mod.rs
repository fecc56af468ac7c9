//! The worker: claims due workflows up to its concurrency, runs each attempt under its lease
//! (`attempt.rs`), keeps the leases alive (`heartbeat`), takes back dead workers' attempts and
//! deletes expired results (`janitor`), and on shutdown stops claiming, lets running attempts
//! finish within the grace period, then gives the rest back.
//!
//! An idle worker sleeps until an event says work arrived (a submit anywhere publishes one) or
//! `poll_interval` passes (timers: retries' backoff, `not_before`).

mod attempt;
mod policy;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{EventHub, Registry, State, Store, store::Lease};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Shown in records and logs; made unique per process by `Worker::new`.
    pub name: String,
    pub concurrency: usize,
    pub lease: Duration,
    pub heartbeat: Duration,
    pub poll_interval: Duration,
    pub shutdown_grace: Duration,
}

/// Why a running attempt was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// A client cancelled the workflow: record CANCELLED.
    Cancel,
    /// The lease is someone else's now: record nothing.
    LeaseLost,
    /// The worker is shutting down past its grace period: give the attempt back.
    Shutdown,
}

/// A running attempt as the worker's other loops see it.
struct Running {
    lease: Lease,
    claimed: Instant,
    stop: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
}

impl Running {
    fn stop(&self, reason: StopReason) {
        // The first reason wins: a cancel that raced a lost lease stays a lost lease.
        let _ = self.reason.set(reason);
        self.stop.cancel();
    }
}

type RunningMap = Arc<Mutex<HashMap<String, Running>>>;

/// What the attempts share with the worker.
struct Shared {
    store: Store,
    registry: Registry,
    settings: WorkerSettings,
    id: String,
    running: RunningMap,
    /// The kinds this worker claims (the registry's, listed once, not per claim).
    kinds: Vec<&'static str>,
}

pub struct Worker {
    shared: Arc<Shared>,
    hub: EventHub,
}

/// Reaping looks for dead workers' leases this often (at most).
const MAX_REAP_INTERVAL: Duration = Duration::from_secs(5);
/// Expired results are looked for this often at most (sooner when results live shorter).
const MAX_PURGE_INTERVAL: Duration = Duration::from_secs(60);

impl Worker {
    pub fn new(store: Store, hub: EventHub, registry: Registry, settings: WorkerSettings) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let id = format!("{}-{}-{}", settings.name, std::process::id(), &suffix[..8]);
        let kinds = registry.kinds();
        // Every kind's lease-expiry count exists from the start, at 0: a first expiry is then
        // an increase Prometheus sees, not a new series.
        for kind in &kinds {
            crate::metrics::metrics().lease_expiries_seen(kind);
        }
        let shared = Shared {
            store,
            kinds,
            registry,
            settings,
            id,
            running: Arc::default(),
        };
        Worker {
            shared: Arc::new(shared),
            hub,
        }
    }

    /// This worker's id, as recorded in the workflows it runs.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Runs until `shutdown` resolves, then drains (see the module docs).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let shared = self.shared;
        let wake = Arc::new(Notify::new());
        let mut helpers = JoinSet::new();
        helpers.spawn(watch_events(
            self.hub.subscribe(),
            wake.clone(),
            shared.clone(),
        ));
        helpers.spawn(heartbeat(shared.clone()));
        helpers.spawn(janitor(shared.store.clone(), shared.settings.lease));
        tracing::info!(
            worker = %shared.id,
            concurrency = shared.settings.concurrency,
            kinds = ?shared.kinds,
            "worker started"
        );

        // A slot is a task running, not an outcome being written: a finished task frees its
        // slot at once, so the next claim overlaps the last outcome's commit (and the writer
        // batches them together). Up to CLAIMS_IN_FLIGHT claims run at once, each for the
        // slots free when it began, so a slot freed during a claim's round trip need not wait
        // for it.
        let slots = Arc::new(Semaphore::new(shared.settings.concurrency));
        let freed = Arc::new(Notify::new());
        let mut attempts = JoinSet::new();
        let mut claims: JoinSet<Claimed> = JoinSet::new();
        // The last claim found less than it asked for: wait for news before asking again.
        let mut idle = false;
        tokio::pin!(shutdown);
        loop {
            while attempts.try_join_next().is_some() {}
            let free = slots.available_permits();
            if !idle
                && free > 0
                && claims.len() < CLAIMS_IN_FLIGHT
                && let Ok(permits) = slots.clone().try_acquire_many_owned(as_u32(free))
            {
                let shared = shared.clone();
                claims.spawn(async move {
                    let result = claim(&shared, free).await;
                    Claimed {
                        permits,
                        asked: free,
                        result,
                    }
                });
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = claims.join_next(), if !claims.is_empty() => {
                    let Ok(Claimed { mut permits, asked, result }) = done else { continue };
                    match result {
                        Ok(claimed) => {
                            idle = claimed.len() < asked;
                            for workflow in claimed {
                                let slot = Slot {
                                    _permit: permits.split(1),
                                    freed: freed.clone(),
                                };
                                attempts.spawn(attempt::run(shared.clone(), workflow, slot));
                            }
                        }
                        Err(e) => {
                            idle = true;
                            tracing::warn!(error = %e, "cannot claim workflows; will retry");
                        }
                    }
                }
                () = freed.notified() => idle = false,
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                () = wake.notified() => idle = false,
                () = tokio::time::sleep(shared.settings.poll_interval), if idle => idle = false,
            }
        }

        // Claims still in flight: their workflows go straight back to the queue.
        while let Some(done) = claims.join_next().await {
            if let Ok(Claimed {
                result: Ok(claimed),
                ..
            }) = done
            {
                for workflow in claimed {
                    let lease = Lease::of(&workflow, &shared.id);
                    if let Err(e) = shared.store.release(&lease).await {
                        tracing::warn!(id = %lease.id, error = %e, "cannot give a claim back");
                    }
                    shared
                        .running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&lease.id);
                }
            }
        }
        drain(&shared, &mut attempts).await;
        helpers.shutdown().await;
        tracing::info!(worker = %shared.id, "worker stopped");
    }
}

/// Claims running at once per worker.
const CLAIMS_IN_FLIGHT: usize = 2;

/// A finished claim: the slots it held and what it got.
struct Claimed {
    permits: OwnedSemaphorePermit,
    asked: usize,
    result: Result<Vec<crate::Workflow>, crate::StoreError>,
}

/// One task's right to run; dropping it (when the task returns) lets the claim loop refill.
pub(crate) struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.freed.notify_one();
    }
}

fn as_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

async fn claim(shared: &Shared, free: usize) -> Result<Vec<crate::Workflow>, crate::StoreError> {
    let claimed = shared
        .store
        .claim(&shared.id, &shared.kinds, free, shared.settings.lease)
        .await?;
    let mut running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
    for workflow in &claimed {
        let new = Running {
            lease: Lease::of(workflow, &shared.id),
            claimed: Instant::now(),
            stop: CancellationToken::new(),
            reason: Arc::default(),
        };
        // This worker's own earlier attempt, reaped while it still ran (the database was
        // away longer than the lease): that attempt's lease is gone.
        if let Some(old) = running.insert(workflow.id.clone(), new) {
            old.stop(StopReason::LeaseLost);
        }
    }
    Ok(claimed)
}

/// SIGTERM: running attempts get the grace period to finish; the rest are given back.
async fn drain(shared: &Shared, attempts: &mut JoinSet<()>) {
    if attempts.is_empty() {
        return;
    }
    tracing::info!(
        running = attempts.len(),
        grace_ms = shared.settings.shutdown_grace.as_millis(),
        "worker draining: waiting for running attempts"
    );
    let finished = tokio::time::timeout(shared.settings.shutdown_grace, async {
        while attempts.join_next().await.is_some() {}
    })
    .await;
    if finished.is_ok() {
        return;
    }
    let mut released = 0;
    for running in shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
    {
        running.stop(StopReason::Shutdown);
        released += 1;
    }
    tracing::warn!(released, "grace period over: giving running attempts back");
    while attempts.join_next().await.is_some() {}
}

/// Wakes the claim loop when work arrives and delivers cancel requests to running attempts.
async fn watch_events(
    mut events: tokio::sync::broadcast::Receiver<Arc<crate::WorkflowEvent>>,
    wake: Arc<Notify>,
    shared: Arc<Shared>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(event) => {
                let state = State::parse(&event.state);
                if matches!(state, Some(State::Pending | State::Retry))
                    && shared.registry.get(&event.kind).is_some()
                {
                    wake.notify_one();
                }
                if event.cancel_requested && state == Some(State::Started) {
                    let running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(r) = running.get(&event.id) {
                        r.stop(StopReason::Cancel);
                    }
                }
            }
            // Missed events: a claim attempt finds any work they announced; cancels arrive
            // with the next heartbeat.
            Err(RecvError::Lagged(_)) => wake.notify_one(),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Extends this worker's leases; stops attempts whose lease is gone or that were cancelled.
async fn heartbeat(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.settings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let asked = Instant::now();
        let leases: Vec<Lease> = {
            let running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
            running.values().map(|r| r.lease.clone()).collect()
        };
        let beat = shared
            .store
            .heartbeat(&shared.id, &leases, shared.settings.lease);
        let held = match beat.await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; leases not extended");
                continue;
            }
        };
        let held: HashMap<Lease, bool> = held.into_iter().collect();
        let running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
        for r in running.values() {
            match held.get(&r.lease) {
                Some(true) => r.stop(StopReason::Cancel),
                Some(false) => {}
                // Claimed after the heartbeat's UPDATE ran: not judged this round.
                None if r.claimed >= asked => {}
                None => {
                    tracing::warn!(id = %r.lease.id, "lease lost; abandoning the attempt");
                    r.stop(StopReason::LeaseLost);
                }
            }
        }
    }
}

/// Takes back dead workers' attempts; deletes expired results.
async fn janitor(store: Store, lease: Duration) {
    let reap_every = (lease / 4).clamp(Duration::from_millis(100), MAX_REAP_INTERVAL);
    let mut tick = tokio::time::interval(reap_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let purge_every = store
        .result_ttl
        .clamp(Duration::from_millis(100), MAX_PURGE_INTERVAL);
    let mut last_purge: Option<Instant> = None;
    loop {
        tick.tick().await;
        match store.reap_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(taken_back = n, "took back attempts of a dead worker"),
            Err(e) => tracing::warn!(error = %e, "cannot look for expired leases"),
        }
        if last_purge.is_none_or(|t| t.elapsed() >= purge_every) {
            last_purge = Some(Instant::now());
            match store.purge_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "deleted expired workflows"),
                Err(e) => tracing::warn!(error = %e, "cannot delete expired workflows"),
            }
        }
    }
}
