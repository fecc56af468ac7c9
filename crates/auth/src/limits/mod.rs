//! Requests and tokens per minute per principal, as GCRA (one "theoretical arrival time" per
//! principal and dimension). Shared through Redis when `cache.redis_url` is set, timed by
//! Redis's own clock so replicas agree (`redis.rs`); a busy principal's requests are admitted
//! from slices of its budget leased to this process, a round trip per slice (`lease.rs`).
//! Redis failing degrades to per-process counts for a second at a time, never to an error.
//!
//! Tokens are debited after the fact (an embedding's input tokens, a completion's usage when
//! it ends): a request is admitted while any of the minute's token budget is left, and a
//! request that overspends makes the next ones wait, as the budget's debt drains. With Redis,
//! a debit rides on the principal's next round trip, and what is still pending after
//! `FLUSH_EVERY` is written on its own: another replica sees a debit at most that late (plus
//! a slice's life).

mod lease;
mod redis;
#[cfg(test)]
mod shared_tests;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use self::{lease::Leases, redis::RedisLimits};
use crate::permission::Limits;

const PERIOD_US: u64 = 60_000_000;
/// After a Redis failure, per-process counts for this long before trying Redis again.
const DEGRADED_FOR: Duration = Duration::from_secs(1);
/// Token debits no round trip carried are written this often.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// What the caller's budgets look like after this request: OpenAI's `x-ratelimit-*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateState {
    pub limits: Limits,
    pub remaining_requests: u64,
    pub remaining_tokens: u64,
    /// Until the budget is whole again.
    pub reset_requests: Duration,
    pub reset_tokens: Duration,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Verdict {
    Allowed(RateState),
    Limited {
        state: RateState,
        retry_after: Duration,
    },
}

/// GCRA state of one principal: microseconds on the limiter's clock.
#[derive(Debug, Clone, Copy, Default)]
struct Tats {
    requests: u64,
    tokens: u64,
}

pub(crate) struct Limiter {
    local: Mutex<HashMap<String, Tats>>,
    epoch: Instant,
    redis: Option<RedisLimits>,
    leases: Leases,
}

/// For `/health/detailed`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LimiterStatus {
    /// `redis` (shared across replicas) or `local` (this process only).
    pub store: &'static str,
    pub degraded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Limiter {
    /// `redis_url`: share the counts; a malformed URL is an error (a Redis that is down is not).
    pub(crate) fn new(
        redis_url: Option<&str>,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Limiter, String> {
        let redis = match redis_url {
            None => None,
            Some(url) => Some(RedisLimits::new(url, prefix, timeout)?),
        };
        Ok(Limiter {
            redis,
            ..Limiter::local()
        })
    }

    /// Counts in this process only.
    pub(crate) fn local() -> Limiter {
        Limiter {
            local: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            redis: None,
            leases: Leases::default(),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Counts one request against `limits` (a principal without limits never gets here).
    pub(crate) async fn admit(&self, id: &str, limits: Limits) -> Verdict {
        let (ri, ti) = (interval(limits.rpm), interval(limits.tpm));
        if let Some(redis) = self.redis.as_ref().filter(|r| r.usable(self.now_us())) {
            let slot = self.leases.slot(id, self.now_us());
            if let Some(used) = slot.take(self.now_us(), limits, ri, ti) {
                return verdict(limits, ri, ti, used);
            }
            let refilling = slot.refill.lock().await;
            // Another request may have brought a slice (or a refusal) while this one waited,
            // or Redis failed for it.
            if let Some(used) = slot.take(self.now_us(), limits, ri, ti) {
                return verdict(limits, ri, ti, used);
            }
            if redis.usable(self.now_us()) {
                let asked = self.now_us();
                let ask = slot.ask(asked, limits);
                let debt = redis.take_pending(id);
                match redis.lease(id, (ri, ti), debt, ask.want, ask.refund).await {
                    Ok(grant) => {
                        let used = slot.granted(asked, limits, ri, grant);
                        return verdict(limits, ri, ti, used);
                    }
                    Err(e) => {
                        redis.failed(&e, self.now_us());
                        self.debit_local(id, debt);
                    }
                }
            }
            drop(refilling);
        }
        self.admit_local(id, ri, ti, limits)
    }

    fn admit_local(&self, id: &str, ri: u64, ti: u64, limits: Limits) -> Verdict {
        let now = self.now_us();
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        if local.len() > 16_384 {
            local.retain(|_, t| t.requests > now || t.tokens > now);
        }
        let tats = local.entry(id.to_string()).or_default();
        let rtat = tats.requests.max(now);
        let ttat = tats.tokens.max(now);
        let mut retry = 0;
        let mut allowed = true;
        if ti > 0 && ttat - now >= PERIOD_US {
            allowed = false;
            retry = ttat - now - PERIOD_US + ti;
        }
        let next = rtat + ri;
        if ri > 0 && next - now > PERIOD_US {
            allowed = false;
            retry = retry.max(next - now - PERIOD_US);
        }
        let rtat = if allowed && ri > 0 { next } else { rtat };
        tats.requests = rtat;
        verdict(limits, ri, ti, (allowed, retry, rtat - now, ttat - now))
    }

    /// Adds `tokens` used to the principal's token debt, in the background.
    pub(crate) fn debit_tokens(self: &Arc<Self>, id: &str, tpm: u64, tokens: u64) {
        let cost = interval(tpm).saturating_mul(tokens);
        match self.redis.as_ref().filter(|r| r.usable(self.now_us())) {
            Some(redis) => {
                redis.add_pending(id, cost);
                self.leases.debit(id, cost);
            }
            None => self.debit_local(id, cost),
        }
    }

    /// Writes the debits no round trip carried, every `FLUSH_EVERY`, for as long as the
    /// runtime runs (only with Redis).
    pub(crate) fn start_flush(self: &Arc<Self>) {
        if self.redis.is_none() {
            return;
        }
        let limiter = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FLUSH_EVERY).await;
                let Some(limiter) = limiter.upgrade() else {
                    return;
                };
                let Some(redis) = limiter.redis.as_ref() else {
                    return;
                };
                let pending = std::mem::take(
                    &mut *redis.pending.lock().unwrap_or_else(PoisonError::into_inner),
                );
                for (id, cost) in pending {
                    let key = format!("{}{id}:t", redis.prefix);
                    if let Err(e) = redis.debit(&key, cost).await {
                        redis.failed(&e, limiter.now_us());
                        limiter.debit_local(&id, cost);
                    }
                }
            }
        });
    }

    fn debit_local(&self, id: &str, cost: u64) {
        let now = self.now_us();
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        let tats = local.entry(id.to_string()).or_default();
        tats.tokens = tats.tokens.max(now).saturating_add(cost);
    }

    pub(crate) fn status(&self) -> LimiterStatus {
        match &self.redis {
            None => LimiterStatus {
                store: "local",
                degraded: false,
                last_error: None,
            },
            Some(r) => {
                let degraded = r.degraded.load(Ordering::Acquire);
                LimiterStatus {
                    store: "redis",
                    degraded,
                    last_error: r
                        .last_error
                        .lock()
                        .ok()
                        .and_then(|e| e.clone())
                        .filter(|_| degraded),
                }
            }
        }
    }
}

/// Microseconds one unit of a per-minute limit costs; 0: unlimited.
fn interval(per_minute: u64) -> u64 {
    match per_minute {
        0 => 0,
        n => (PERIOD_US / n).max(1),
    }
}

/// `used`: (allowed, retry after, request budget used, token budget used), in microseconds.
fn verdict(limits: Limits, ri: u64, ti: u64, used: lease::Used) -> Verdict {
    let (allowed, retry, used_r, used_t) = used;
    let remaining = |interval: u64, used: u64| match interval {
        0 => 0,
        i => PERIOD_US.saturating_sub(used) / i,
    };
    let state = RateState {
        limits,
        remaining_requests: remaining(ri, used_r).min(limits.rpm),
        remaining_tokens: remaining(ti, used_t).min(limits.tpm),
        reset_requests: Duration::from_micros(used_r),
        reset_tokens: Duration::from_micros(used_t),
    };
    match allowed {
        true => Verdict::Allowed(state),
        false => Verdict::Limited {
            state,
            retry_after: Duration::from_micros(retry),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_the_limit_then_refusals() {
        let limiter =
            Limiter::new(None, "t", Duration::from_millis(50)).unwrap_or_else(|e| panic!("{e}"));
        let limits = Limits { rpm: 10, tpm: 0 };
        let mut allowed = 0;
        for _ in 0..15 {
            if let Verdict::Allowed(_) = limiter.admit("k", limits).await {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 10);
        match limiter.admit("k", limits).await {
            Verdict::Limited { retry_after, state } => {
                assert!(retry_after > Duration::from_secs(5), "{retry_after:?}");
                assert_eq!(state.remaining_requests, 0);
            }
            Verdict::Allowed(_) => panic!("11th request allowed"),
        }
    }

    #[tokio::test]
    async fn spent_tokens_refuse_until_the_debt_drains() {
        let limiter = Arc::new(
            Limiter::new(None, "t", Duration::from_millis(50)).unwrap_or_else(|e| panic!("{e}")),
        );
        let limits = Limits { rpm: 0, tpm: 100 };
        assert!(matches!(
            limiter.admit("k", limits).await,
            Verdict::Allowed(_)
        ));
        limiter.debit_tokens("k", 100, 150);
        match limiter.admit("k", limits).await {
            Verdict::Limited { retry_after, .. } => {
                assert!(retry_after > Duration::from_secs(29), "{retry_after:?}");
            }
            Verdict::Allowed(s) => panic!("allowed with {s:?}"),
        }
    }
}
