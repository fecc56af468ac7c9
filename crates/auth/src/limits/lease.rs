//! Slices of a principal's shared request budget held by this process, so that a busy key
//! costs a Redis round trip per slice, not per request.
//!
//! A slice is taken from Redis's budget when it is granted, so replicas never admit more than
//! the limit between them; what a slice cannot do is give its unused units to another replica
//! before this process refunds them (at its next round trip for that principal). To keep that
//! small, a slice is at most 1 % of the minute's requests (`--rpm 10` gets slices of one:
//! every request asks Redis, exactly as without leases) and lives `LEASE_FOR`, which also
//! bounds how stale this process's view of the token budget may be. Slices grow while they are
//! used up within their life and shrink to what was used when they are not.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use super::{PERIOD_US, redis::Grant};
use crate::permission::Limits;

/// How long a slice may be used, and how late another replica's token debits may be seen.
pub(super) const LEASE_FOR: Duration = Duration::from_millis(100);
/// The most units one slice holds, whatever the limit.
const MAX_UNITS: u64 = 1024;
/// Principals tracked before slices that ran out of time are dropped.
const MAX_PRINCIPALS: usize = 16_384;

/// (allowed, retry after, request budget used, token budget used), in microseconds: what
/// `verdict` turns into headers.
pub(super) type Used = (bool, u64, u64, u64);

/// What the next round trip asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ask {
    pub want: u64,
    /// Unused request budget of the last slice, given back (µs).
    pub refund: u64,
}

/// One principal's slice; times on the limiter's clock (µs).
#[derive(Debug, Clone, Copy)]
struct Slice {
    limits: Limits,
    units: u64,
    left: u64,
    expires: u64,
    /// When the request budget is whole again, with every unit of the slice spent.
    requests_tat: u64,
    /// When the token budget is whole again: Redis's view at the grant plus this process's
    /// debits since.
    tokens_tat: u64,
}

#[derive(Default)]
pub(super) struct Slot {
    slice: Mutex<Option<Slice>>,
    /// One round trip per principal at a time: the others wait for its slice.
    pub refill: tokio::sync::Mutex<()>,
}

#[derive(Default)]
pub(super) struct Leases {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Leases {
    pub(super) fn slot(&self, id: &str, now: u64) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(id) {
            return Arc::clone(slot);
        }
        if slots.len() >= MAX_PRINCIPALS {
            slots.retain(|_, slot| Arc::strong_count(slot) > 1 || slot.live(now));
        }
        Arc::clone(slots.entry(id.to_string()).or_default())
    }

    /// This process's own token debit, seen by its slice at once.
    pub(super) fn debit(&self, id: &str, cost: u64) {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(id) {
            let mut slice = slot.slice.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = slice.as_mut() {
                s.tokens_tat = s.tokens_tat.saturating_add(cost);
            }
        }
    }
}

impl Slot {
    fn live(&self, now: u64) -> bool {
        let slice = self.slice.lock().unwrap_or_else(PoisonError::into_inner);
        slice.is_some_and(|s| s.expires > now)
    }

    /// Admits one request from the slice, if it has a unit left, is still alive, was granted
    /// under these limits and the token budget (as far as this process knows) is not spent.
    /// Refusals are never decided here: Redis decides them.
    pub(super) fn take(&self, now: u64, limits: Limits, ri: u64, ti: u64) -> Option<Used> {
        let mut slice = self.slice.lock().unwrap_or_else(PoisonError::into_inner);
        let s = slice.as_mut()?;
        let tokens_used = s.tokens_tat.saturating_sub(now);
        if s.left == 0 || s.expires <= now || s.limits != limits {
            return None;
        }
        if ti > 0 && tokens_used >= PERIOD_US {
            return None;
        }
        s.left -= 1;
        let requests_used = s
            .requests_tat
            .saturating_sub(s.left.saturating_mul(ri))
            .saturating_sub(now);
        Some((true, 0, requests_used, tokens_used))
    }

    /// Ends the current slice and says what to ask Redis for: double a slice used up within
    /// its life, the part used of one that was not, one unit under new limits.
    pub(super) fn ask(&self, now: u64, limits: Limits, ri: u64) -> Ask {
        let cap = match limits.rpm {
            0 => MAX_UNITS,
            rpm => (rpm / 100).clamp(1, MAX_UNITS),
        };
        let mut slice = self.slice.lock().unwrap_or_else(PoisonError::into_inner);
        let (want, refund) = match slice.take() {
            None => (1, 0),
            Some(s) if s.limits != limits => (1, 0),
            Some(s) if s.left == 0 && s.expires > now => (s.units.saturating_mul(2), 0),
            Some(s) => (s.units - s.left, s.left.saturating_mul(ri)),
        };
        Ask {
            want: want.clamp(1, cap),
            refund,
        }
    }

    /// Installs what Redis granted and answers the request that asked.
    pub(super) fn granted(&self, now: u64, limits: Limits, ri: u64, grant: Grant) -> Used {
        if !grant.allowed || grant.units == 0 {
            return (false, grant.retry, grant.used_requests, grant.used_tokens);
        }
        let left = grant.units - 1;
        let slice = Slice {
            limits,
            units: grant.units,
            left,
            expires: now + u64::try_from(LEASE_FOR.as_micros()).unwrap_or(u64::MAX),
            requests_tat: now + grant.used_requests,
            tokens_tat: now + grant.used_tokens,
        };
        *self.slice.lock().unwrap_or_else(PoisonError::into_inner) = Some(slice);
        let requests_used = grant.used_requests.saturating_sub(left.saturating_mul(ri));
        (true, 0, requests_used, grant.used_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        rpm: 10_000,
        tpm: 0,
    };
    const RI: u64 = PERIOD_US / 10_000;

    fn grant(units: u64) -> Grant {
        Grant {
            allowed: true,
            retry: 0,
            used_requests: units * RI,
            used_tokens: 0,
            units,
        }
    }

    #[test]
    fn slices_grow_while_used_up_and_shrink_to_what_was_used() {
        let slot = Slot::default();
        let ask = slot.ask(0, LIMITS, RI);
        assert_eq!(ask, Ask { want: 1, refund: 0 });
        slot.granted(0, LIMITS, RI, grant(1));
        assert_eq!(
            slot.take(10, LIMITS, RI, 0),
            None,
            "a slice of one is used up"
        );
        assert_eq!(slot.ask(10, LIMITS, RI).want, 2);
        slot.granted(10, LIMITS, RI, grant(64));
        // The cap is 1 % of the minute: 100 units.
        for _ in 0..63 {
            assert!(slot.take(20, LIMITS, RI, 0).is_some());
        }
        assert_eq!(slot.ask(20, LIMITS, RI).want, 100);
        slot.granted(20, LIMITS, RI, grant(100));
        for _ in 0..29 {
            assert!(slot.take(30, LIMITS, RI, 0).is_some());
        }
        let later = 30 + 1_000_000;
        assert_eq!(
            slot.take(later, LIMITS, RI, 0),
            None,
            "the slice ran out of time"
        );
        assert_eq!(
            slot.ask(later, LIMITS, RI),
            Ask {
                want: 30,
                refund: 70 * RI
            },
            "shrinks to what was used, gives the rest back"
        );
    }

    #[test]
    fn remaining_counts_the_units_still_held_as_unspent() {
        let slot = Slot::default();
        let (allowed, _, used, _) = slot.granted(0, LIMITS, RI, grant(10));
        assert!(allowed);
        assert_eq!(used, RI, "one request spent, nine held");
        let (_, _, used, _) = slot.take(0, LIMITS, RI, 0).unwrap_or_default();
        assert_eq!(used, 2 * RI);
    }

    #[test]
    fn new_limits_end_the_slice_and_a_spent_token_budget_asks_redis() {
        let slot = Slot::default();
        slot.granted(0, LIMITS, RI, grant(10));
        let tighter = Limits { rpm: 10, tpm: 0 };
        assert_eq!(slot.take(1, tighter, PERIOD_US / 10, 0), None);
        assert_eq!(
            slot.ask(1, tighter, PERIOD_US / 10),
            Ask { want: 1, refund: 0 }
        );

        let tokens = Limits { rpm: 0, tpm: 100 };
        let leases = Leases::default();
        let slot = leases.slot("k", 0);
        slot.granted(0, tokens, 0, grant(10));
        assert!(slot.take(1, tokens, 0, PERIOD_US / 100).is_some());
        leases.debit("k", PERIOD_US + 10);
        assert_eq!(slot.take(2, tokens, 0, PERIOD_US / 100), None);
    }
}
