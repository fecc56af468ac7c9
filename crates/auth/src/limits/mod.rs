//! Requests and tokens per minute per principal, as GCRA (one "theoretical arrival time" per
//! principal and dimension). Shared through Redis when `cache.redis_url` is set: one Lua script,
//! one round trip per request, timed by Redis's own clock so replicas agree. Redis failing
//! degrades to per-process counts for a second at a time, never to an error.
//!
//! Tokens are debited after the fact (an embedding's input tokens, a completion's usage when
//! it ends): a request is admitted while any of the minute's token budget is left, and a
//! request that overspends makes the next ones wait, as the budget's debt drains. With Redis,
//! a debit rides on the principal's next admission (the same round trip), and what is still
//! pending after `FLUSH_EVERY` is written on its own: another replica sees a debit at most
//! that late.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bb8_redis::RedisConnectionManager;

use crate::permission::Limits;

const PERIOD_US: u64 = 60_000_000;
/// After a Redis failure, per-process counts for this long before trying Redis again.
const DEGRADED_FOR: Duration = Duration::from_secs(1);
/// Token debits no admission carried are written this often.
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
}

struct RedisLimits {
    pool: bb8::Pool<RedisConnectionManager>,
    prefix: String,
    timeout: Duration,
    admit: redis::Script,
    debit: redis::Script,
    /// Token debits (microseconds of the token budget) waiting for the principal's next
    /// admission or the flush.
    pending: Mutex<HashMap<String, u64>>,
    /// Microseconds on the limiter's clock until which Redis is skipped.
    degraded_until: AtomicU64,
    degraded: AtomicBool,
    last_error: Mutex<Option<String>>,
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

const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ri, ti, p, debt = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local rtat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local ttat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
if debt > 0 then
  ttat = ttat + debt
  redis.call('SET', KEYS[2], string.format('%.0f', ttat), 'PX', math.ceil((ttat - now) / 1000) + 1)
end
local allowed, retry = 1, 0
if ti > 0 and ttat - now >= p then
  allowed, retry = 0, ttat - now - p + ti
end
local next = rtat + ri
if ri > 0 and next - now > p then
  allowed, retry = 0, math.max(retry, next - now - p)
end
if allowed == 1 and ri > 0 then
  rtat = next
  redis.call('SET', KEYS[1], string.format('%.0f', rtat), 'PX', math.ceil((rtat - now) / 1000) + 1)
end
return {allowed, string.format('%.0f', retry), string.format('%.0f', rtat - now), string.format('%.0f', ttat - now)}
";

const DEBIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return 1
";

impl Limiter {
    /// `redis_url`: share the counts; a malformed URL is an error (a Redis that is down is not).
    pub(crate) fn new(
        redis_url: Option<&str>,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Limiter, String> {
        let redis = match redis_url {
            None => None,
            Some(url) => {
                let manager = RedisConnectionManager::new(url)
                    .map_err(|e| format!("cache.redis_url `{url}` is not a Redis URL: {e}"))?;
                let pool = bb8::Pool::builder()
                    .max_size(16)
                    .connection_timeout(timeout)
                    .test_on_check_out(false)
                    .build_unchecked(manager);
                Some(RedisLimits {
                    pool,
                    prefix: format!("{prefix}:rl:"),
                    timeout,
                    admit: redis::Script::new(ADMIT),
                    debit: redis::Script::new(DEBIT),
                    pending: Mutex::new(HashMap::new()),
                    degraded_until: AtomicU64::new(0),
                    degraded: AtomicBool::new(false),
                    last_error: Mutex::new(None),
                })
            }
        };
        Ok(Limiter {
            local: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            redis,
        })
    }

    /// Counts in this process only.
    pub(crate) fn local() -> Limiter {
        Limiter {
            local: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            redis: None,
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Counts one request against `limits` (a principal without limits never gets here).
    pub(crate) async fn admit(&self, id: &str, limits: Limits) -> Verdict {
        let (ri, ti) = (interval(limits.rpm), interval(limits.tpm));
        if let Some(redis) = self.redis.as_ref().filter(|r| r.usable(self.now_us())) {
            let debt = redis.take_pending(id);
            match redis.admit(id, ri, ti, debt).await {
                Ok(used) => return verdict(limits, ri, ti, used),
                Err(e) => {
                    redis.failed(&e, self.now_us());
                    self.debit_local(id, debt);
                }
            }
        }
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
            Some(redis) => redis.add_pending(id, cost),
            None => self.debit_local(id, cost),
        }
    }

    /// Writes the debits no admission carried, every `FLUSH_EVERY`, for as long as the
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

impl RedisLimits {
    fn take_pending(&self, id: &str) -> u64 {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.remove(id).unwrap_or(0)
    }

    fn add_pending(&self, id: &str, cost: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let debt = pending.entry(id.to_string()).or_default();
        *debt = debt.saturating_add(cost);
    }

    fn usable(&self, now: u64) -> bool {
        self.degraded_until.load(Ordering::Acquire) <= now
    }

    fn failed(&self, error: &str, now: u64) {
        let until = now + u64::try_from(DEGRADED_FOR.as_micros()).unwrap_or(u64::MAX);
        self.degraded_until.store(until, Ordering::Release);
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error,
                "rate limits: Redis failed, counting per process for now"
            );
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string());
        }
    }

    async fn admit(
        &self,
        id: &str,
        ri: u64,
        ti: u64,
        debt: u64,
    ) -> Result<(bool, u64, u64, u64), String> {
        let work = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            let (allowed, retry, used_r, used_t): (i64, String, String, String) = self
                .admit
                .key(format!("{}{id}:r", self.prefix))
                .key(format!("{}{id}:t", self.prefix))
                .arg(ri)
                .arg(ti)
                .arg(PERIOD_US)
                .arg(debt)
                .invoke_async(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
            let num = |s: &str| s.parse::<f64>().map(|v| v.max(0.0) as u64);
            match (num(&retry), num(&used_r), num(&used_t)) {
                (Ok(r), Ok(u), Ok(t)) => Ok((allowed == 1, r, u, t)),
                _ => Err("the rate-limit script answered something unexpected".to_string()),
            }
        };
        let answer = tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}ms", self.timeout.as_millis())));
        if answer.is_ok() && self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!("rate limits: Redis answers again; counts are shared");
        }
        answer
    }

    async fn debit(&self, key: &str, cost: u64) -> Result<(), String> {
        let work = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            self.debit
                .key(key)
                .arg(cost)
                .invoke_async::<i64>(&mut *conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(self.timeout * 4, work)
            .await
            .unwrap_or_else(|_| Err("no answer in time".to_string()))
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
fn verdict(limits: Limits, ri: u64, ti: u64, used: (bool, u64, u64, u64)) -> Verdict {
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
