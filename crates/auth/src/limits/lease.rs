//! Slices of a principal's shared request budget held by this process, so that a busy key
//! costs a Redis round trip per slice, not per request.
//!
//! A slice is taken from Redis's budget when it is granted, so replicas never admit more than
//! the limit between them. What a slice cannot do is lend its unused units to another replica
//! before this process gives them back (at its next round trip for that principal, and only
//! the part of them that has not drained since, so a late refund never frees budget another
//! replica has spent). To keep that small, a slice is at most 1 % of the minute's requests
//! (`--rpm 10` gets slices of one: every request asks Redis, as without leases) and lives
//! `LEASE_FOR`. Slices grow while they are used up within their life and shrink to what was
//! used when they are not.
//!
//! A principal limited by tokens only takes slices too (up to `MAX_UNITS` requests): its
//! requests are admitted while this process's view of the token budget has some left, a view
//! that misses other replicas' debits for at most a slice's life, on top of the debits' own
//! lag (`FLUSH_EVERY`). Redis's refusals are repeated here for at most a slice's life, so a
//! flood past the limit waits for no round trip.

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
    /// The request interval the units were priced at.
    ri: u64,
    units: u64,
    left: u64,
    expires: u64,
    /// When the request budget is whole again, with every unit of the slice spent.
    requests_tat: u64,
    /// When the token budget is whole again: Redis's view at the grant plus this process's
    /// debits since.
    tokens_tat: u64,
}

impl Slice {
    /// The unused units' part of the shared budget that has not drained yet: never more, so
    /// a refund cannot hand back budget another replica has used since.
    fn refund(&self, now: u64) -> u64 {
        self.left
            .saturating_mul(self.ri)
            .min(self.requests_tat.saturating_sub(now))
    }
}

/// Redis's last refusal, repeated for a short while so that a flood past the limit is
/// answered here, not one round trip per request queued behind the refill.
#[derive(Debug, Clone, Copy)]
struct Refused {
    limits: Limits,
    until: u64,
    retry_at: u64,
    requests_tat: u64,
    tokens_tat: u64,
}

#[derive(Debug, Default)]
struct Held {
    slice: Option<Slice>,
    refused: Option<Refused>,
}

#[derive(Default)]
pub(super) struct Slot {
    held: Mutex<Held>,
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
            if slots.len() >= MAX_PRINCIPALS {
                // Every slice alive: drop the idle principals' too, or each new principal
                // would scan the map again. Their units stay spent until they drain.
                slots.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
        }
        Arc::clone(slots.entry(id.to_string()).or_default())
    }

    /// This process's own token debit, seen by its slice at once.
    pub(super) fn debit(&self, id: &str, cost: u64) {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(id) {
            let mut held = slot.held.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = held.slice.as_mut() {
                s.tokens_tat = s.tokens_tat.saturating_add(cost);
            }
        }
    }
}

impl Slot {
    fn live(&self, now: u64) -> bool {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.slice.is_some_and(|s| s.expires > now)
    }

    /// Answers one request from what this process holds: a unit of a live slice granted
    /// under these limits while the token budget (as far as this process knows) is not
    /// spent, or Redis's refusal of a moment ago. `None`: ask Redis.
    pub(super) fn take(&self, now: u64, limits: Limits, ri: u64, ti: u64) -> Option<Used> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = held.refused {
            if r.limits == limits && r.until > now {
                let since = |tat: u64| tat.saturating_sub(now);
                let used = (
                    false,
                    since(r.retry_at),
                    since(r.requests_tat),
                    since(r.tokens_tat),
                );
                return Some(used);
            }
            held.refused = None;
        }
        let s = held.slice.as_mut()?;
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
    /// its life, the part used of one that was not, one unit under new limits; with what is
    /// left of the old slice given back.
    pub(super) fn ask(&self, now: u64, limits: Limits) -> Ask {
        let cap = match limits.rpm {
            0 => MAX_UNITS,
            rpm => (rpm / 100).clamp(1, MAX_UNITS),
        };
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (want, refund) = match held.slice.take() {
            None => (1, 0),
            Some(s) if s.limits != limits => (1, s.refund(now)),
            Some(s) if s.left == 0 && s.expires > now => (s.units.saturating_mul(2), 0),
            Some(s) => (s.units - s.left, s.refund(now)),
        };
        Ask {
            want: want.clamp(1, cap),
            refund,
        }
    }

    /// Installs what Redis granted (`asked`: the limiter's clock when the request was sent,
    /// so the slice never outlives Redis's view of it) and answers the request that asked.
    pub(super) fn granted(&self, asked: u64, limits: Limits, ri: u64, grant: Grant) -> Used {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if !grant.allowed || grant.units == 0 {
            let lasts = u64::try_from(LEASE_FOR.as_micros()).unwrap_or(u64::MAX);
            held.refused = Some(Refused {
                limits,
                until: asked + grant.retry.min(lasts),
                retry_at: asked + grant.retry,
                requests_tat: asked + grant.used_requests,
                tokens_tat: asked + grant.used_tokens,
            });
            return (false, grant.retry, grant.used_requests, grant.used_tokens);
        }
        let left = grant.units - 1;
        held.refused = None;
        held.slice = Some(Slice {
            limits,
            ri,
            units: grant.units,
            left,
            expires: asked + u64::try_from(LEASE_FOR.as_micros()).unwrap_or(u64::MAX),
            requests_tat: asked + grant.used_requests,
            tokens_tat: asked + grant.used_tokens,
        });
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
    /// Half the minute's requests were in use before each grant.
    const BEFORE: u64 = PERIOD_US / 2;
    const LIFE: u64 = LEASE_FOR.as_micros() as u64;

    fn grant(units: u64) -> Grant {
        Grant {
            allowed: true,
            retry: 0,
            used_requests: BEFORE + units * RI,
            used_tokens: 0,
            units,
        }
    }

    #[test]
    fn slices_grow_while_used_up_and_shrink_to_what_was_used() {
        let slot = Slot::default();
        let ask = slot.ask(0, LIMITS);
        assert_eq!(ask, Ask { want: 1, refund: 0 });
        slot.granted(0, LIMITS, RI, grant(1));
        assert_eq!(
            slot.take(10, LIMITS, RI, 0),
            None,
            "a slice of one is used up"
        );
        assert_eq!(slot.ask(10, LIMITS).want, 2);
        slot.granted(10, LIMITS, RI, grant(64));
        // The cap is 1 % of the minute: 100 units.
        for _ in 0..63 {
            assert!(slot.take(20, LIMITS, RI, 0).is_some());
        }
        assert_eq!(slot.ask(20, LIMITS).want, 100);
        slot.granted(20, LIMITS, RI, grant(100));
        for _ in 0..29 {
            assert!(slot.take(30, LIMITS, RI, 0).is_some());
        }
        let later = 20 + LIFE;
        assert_eq!(
            slot.take(later, LIMITS, RI, 0),
            None,
            "the slice ran out of time"
        );
        assert_eq!(
            slot.ask(later, LIMITS),
            Ask {
                want: 30,
                refund: 70 * RI
            },
            "shrinks to what was used, gives the rest back"
        );
    }

    #[test]
    fn a_refund_never_gives_back_budget_that_has_drained() {
        let slot = Slot::default();
        slot.granted(0, LIMITS, RI, grant(20));
        // Long after: the whole reservation has drained, and another replica may have spent
        // the budget since; nothing of this slice is still held in Redis.
        let idle = BEFORE + 20 * RI + 1;
        assert_eq!(slot.ask(idle, LIMITS).refund, 0);
        // Part drained: only the part still ahead of the clock comes back.
        slot.granted(0, LIMITS, RI, grant(20));
        let partly = BEFORE + 15 * RI;
        assert_eq!(slot.ask(partly, LIMITS).refund, 5 * RI);
    }

    #[test]
    fn remaining_counts_the_units_still_held_as_unspent() {
        let slot = Slot::default();
        let (allowed, _, used, _) = slot.granted(0, LIMITS, RI, grant(10));
        assert!(allowed);
        assert_eq!(used, BEFORE + RI, "one request spent, nine held");
        let (_, _, used, _) = slot.take(0, LIMITS, RI, 0).unwrap_or_default();
        assert_eq!(used, BEFORE + 2 * RI);
    }

    #[test]
    fn a_refusal_is_repeated_for_a_moment_then_redis_is_asked_again() {
        let slot = Slot::default();
        let refused = Grant {
            allowed: false,
            retry: 5 * LIFE,
            used_requests: PERIOD_US,
            used_tokens: 0,
            units: 0,
        };
        assert!(!slot.granted(0, LIMITS, RI, refused).0);
        let (allowed, retry, used, _) = slot.take(LIFE / 2, LIMITS, RI, 0).unwrap_or_default();
        assert!(!allowed);
        assert_eq!(retry, 5 * LIFE - LIFE / 2, "the wait counts down");
        assert_eq!(used, PERIOD_US - LIFE / 2);
        assert_eq!(slot.take(LIFE, LIMITS, RI, 0), None);
        let other = Limits {
            rpm: 20_000,
            tpm: 0,
        };
        slot.granted(0, LIMITS, RI, refused);
        assert_eq!(
            slot.take(1, other, RI / 2, 0),
            None,
            "not under other limits"
        );
    }

    #[test]
    fn new_limits_end_the_slice_and_a_spent_token_budget_asks_redis() {
        let slot = Slot::default();
        slot.granted(0, LIMITS, RI, grant(10));
        let tighter = Limits { rpm: 10, tpm: 0 };
        assert_eq!(slot.take(1, tighter, PERIOD_US / 10, 0), None);
        assert_eq!(
            slot.ask(1, tighter),
            Ask {
                want: 1,
                refund: 9 * RI
            },
            "the old units are given back at their own price"
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
