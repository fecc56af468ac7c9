//! A connection's watchdog: reads the connection's counters on a timer and decides when it
//! must close, and how.

use std::time::Duration;

use tokio::{sync::watch, time::sleep};

use crate::{Limits, state::ConnState};

/// The bytes of HTTP/2's connection preface; a connection that sent fewer has not begun.
const PREFACE_BYTES: u64 = 24;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Verdict {
    /// Drop the connection now: the client is not playing its part.
    Close(&'static str),
    /// Stop taking requests, finish the ones in flight (hyper closes an idle connection at
    /// once; HTTP/2 gets a GOAWAY).
    Drain(&'static str),
}

/// Waits until the connection must close.
pub(crate) async fn watch(
    state: &ConnState,
    limits: &Limits,
    stop: &mut watch::Receiver<bool>,
) -> Verdict {
    let tick = tick(limits);
    loop {
        if *stop.borrow_and_update() {
            return Verdict::Drain("shutdown");
        }
        tokio::select! {
            () = sleep(tick) => {}
            // Chosen for having nothing in flight; one that started a request since drains it.
            () = state.evicted.notified() => {
                return match state.active() {
                    0 => Verdict::Close("evicted"),
                    _ => Verdict::Drain("evicted"),
                };
            }
            changed = stop.changed() => {
                // A dropped sender means the server is gone: stop as for shutdown.
                if changed.is_err() {
                    return Verdict::Drain("shutdown");
                }
            }
        }
        if let Some(verdict) = check(state, limits) {
            return verdict;
        }
    }
}

/// Once a drain has begun: the reason to stop waiting for it, either the client stalling or
/// `drain_grace` passing with nothing in flight (a half-sent request head, an idle stream).
pub(crate) async fn drain_overdue(state: &ConnState, limits: &Limits) -> &'static str {
    let tick = tick(limits).min(limits.drain_grace / 4).max(MIN_TICK);
    let began = state.clock.now_ms();
    loop {
        sleep(tick).await;
        let now = state.clock.now_ms();
        if stalled_too_long(state, limits, now) {
            return "write_timeout";
        }
        if state.active() == 0 && elapsed(began, now) >= limits.drain_grace {
            return "drain_grace";
        }
    }
}

fn check(state: &ConnState, limits: &Limits) -> Option<Verdict> {
    let now = state.clock.now_ms();
    if stalled_too_long(state, limits, now) {
        return Some(Verdict::Close("write_timeout"));
    }
    // hyper times a request head once its HTTP/1 connection waits for one; a connection that
    // never sends enough to tell HTTP/1 from HTTP/2 never gets that far, so it is timed here.
    let silent = !state.ever_started() && state.bytes_read() < PREFACE_BYTES;
    if silent && elapsed(state.accepted_ms, now) > limits.header_read_timeout {
        return Some(Verdict::Close("header_timeout"));
    }
    match state.idle_since() {
        Some(since) if elapsed(since, now) > limits.idle_timeout => Some(Verdict::Drain("idle")),
        _ => None,
    }
}

fn stalled_too_long(state: &ConnState, limits: &Limits, now: u64) -> bool {
    state
        .stalled_since()
        .is_some_and(|since| elapsed(since, now) > limits.write_timeout)
}

fn elapsed(since: u64, now: u64) -> Duration {
    Duration::from_millis(now.saturating_sub(since))
}

const MIN_TICK: Duration = Duration::from_millis(10);

/// A quarter of the shortest limit, so a limit is enforced within 25% of itself.
fn tick(limits: &Limits) -> Duration {
    let shortest = limits
        .header_read_timeout
        .min(limits.idle_timeout)
        .min(limits.write_timeout);
    (shortest / 4).clamp(MIN_TICK, Duration::from_secs(1))
}
