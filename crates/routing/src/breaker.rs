//! A circuit breaker for one endpoint: CLOSED (requests flow) -> OPEN after `failure_threshold`
//! consecutive failures (requests refused for `open_for`) -> HALF-OPEN (one trial request) ->
//! CLOSED on success, OPEN again on failure. A successful probe closes it from any state; a
//! failed one while open restarts the open period.

use std::sync::Mutex;

use crate::BreakerState;
use tokio::time::{Duration, Instant};

use crate::BreakerPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// `trial`: the generation of the trial in flight, if any.
    HalfOpen {
        trial: Option<u64>,
    },
}

#[derive(Debug)]
struct Inner {
    state: State,
    consecutive_failures: u32,
    /// Numbers trials, so a late release cannot free a newer trial's slot.
    trials: u64,
}

/// What admitted a request: a trial must report back (or be given up) to settle the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Normal,
    Trial(u64),
}

#[derive(Debug)]
pub(crate) struct Breaker {
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub(crate) fn new(policy: BreakerPolicy) -> Self {
        Breaker {
            policy,
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
                trials: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a request could be admitted now (without taking the half-open trial).
    pub(crate) fn admits(&self, now: Instant) -> bool {
        match self.lock().state {
            State::Closed | State::HalfOpen { trial: None } => true,
            State::HalfOpen { trial: Some(_) } => false,
            State::Open { until } => now >= until,
        }
    }

    /// Admits a request, or not. An expired open period turns into the half-open trial.
    pub(crate) fn try_acquire(&self, now: Instant) -> Option<Admission> {
        let mut inner = self.lock();
        match inner.state {
            State::Closed => Some(Admission::Normal),
            State::Open { until } if now < until => None,
            State::HalfOpen { trial: Some(_) } => None,
            State::Open { .. } | State::HalfOpen { trial: None } => {
                inner.trials += 1;
                let generation = inner.trials;
                inner.state = State::HalfOpen {
                    trial: Some(generation),
                };
                Some(Admission::Trial(generation))
            }
        }
    }

    /// The request (or a probe) succeeded. Returns the new state if it changed.
    pub(crate) fn on_success(&self) -> Option<BreakerState> {
        let mut inner = self.lock();
        inner.consecutive_failures = 0;
        let changed = inner.state != State::Closed;
        inner.state = State::Closed;
        changed.then_some(BreakerState::Closed)
    }

    /// The request (or a probe) failed. Returns the new state if it changed.
    pub(crate) fn on_failure(&self, now: Instant) -> Option<BreakerState> {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let open = State::Open {
            until: now + self.policy.open_for,
        };
        match inner.state {
            State::HalfOpen { .. } => {
                inner.state = open;
                Some(BreakerState::Open)
            }
            State::Closed if inner.consecutive_failures >= self.policy.failure_threshold => {
                inner.state = open;
                Some(BreakerState::Open)
            }
            // A failure seen while open (a probe) restarts the open period.
            State::Open { .. } => {
                inner.state = open;
                None
            }
            State::Closed => None,
        }
    }

    /// Trial `generation` ended without a verdict (its caller went away, or a 429): let
    /// another one through. A verdict already given, or a newer trial, is left alone.
    pub(crate) fn release_trial(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.state
            == (State::HalfOpen {
                trial: Some(generation),
            })
        {
            inner.state = State::HalfOpen { trial: None };
        }
    }

    pub(crate) fn view(&self, now: Instant) -> (BreakerState, u32) {
        let inner = self.lock();
        let state = match inner.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        (state, inner.consecutive_failures)
    }

    /// Open: how long until a trial is let through.
    pub(crate) fn reopens_in(&self, now: Instant) -> Option<Duration> {
        match self.lock().state {
            State::Open { until } => Some(until.saturating_duration_since(now)),
            _ => None,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(self.lock().state, State::Open { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerPolicy {
            failure_threshold: 2,
            open_for: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_the_threshold_then_lets_one_trial_through() {
        let b = breaker();
        let t0 = Instant::now();
        assert_eq!(b.on_failure(t0), None);
        assert_eq!(b.on_failure(t0), Some(BreakerState::Open));
        assert_eq!(b.try_acquire(t0), None);
        assert!(!b.admits(t0 + Duration::from_secs(9)));

        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.try_acquire(later), Some(Admission::Trial(1)));
        assert_eq!(b.try_acquire(later), None, "only one trial at a time");
        b.release_trial(1);
        assert_eq!(b.try_acquire(later), Some(Admission::Trial(2)));
        b.release_trial(1);
        assert_eq!(b.try_acquire(later), None, "a stale release frees nothing");
        assert_eq!(b.on_failure(later), Some(BreakerState::Open));
        assert_eq!(b.try_acquire(later), None, "a failed trial re-opens");

        let much_later = later + Duration::from_secs(10);
        assert_eq!(b.try_acquire(much_later), Some(Admission::Trial(3)));
        assert_eq!(b.on_success(), Some(BreakerState::Closed));
        assert_eq!(b.try_acquire(much_later), Some(Admission::Normal));
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breaker();
        let t0 = Instant::now();
        b.on_failure(t0);
        assert_eq!(b.on_success(), None);
        assert_eq!(b.on_failure(t0), None);
        assert_eq!(b.view(t0), (BreakerState::Closed, 1));
    }
}
