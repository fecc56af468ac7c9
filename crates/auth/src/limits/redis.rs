//! The shared side of the limits: two Lua scripts in Redis, timed by Redis's own clock so
//! replicas agree. `LEASE` admits a request and hands this process a slice of the request
//! budget in the same round trip; `DEBIT` writes token debits no admission carried.

use std::{
    collections::HashMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bb8_redis::RedisConnectionManager;

use super::{DEGRADED_FOR, PERIOD_US};

/// Redis's answer to a lease: microseconds, relative to Redis's clock at the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Grant {
    pub allowed: bool,
    pub retry: u64,
    /// Request budget in use, counting every unit granted.
    pub used_requests: u64,
    pub used_tokens: u64,
    /// Requests this process may admit on its own, this one included (0 when refused).
    pub units: u64,
}

pub(super) struct RedisLimits {
    pool: bb8::Pool<RedisConnectionManager>,
    pub(super) prefix: String,
    timeout: Duration,
    lease: redis::Script,
    debit: redis::Script,
    /// Token debits (microseconds of the token budget) waiting for the principal's next
    /// round trip or the flush.
    pub(super) pending: Mutex<HashMap<String, u64>>,
    /// Microseconds on the limiter's clock until which Redis is skipped.
    degraded_until: AtomicU64,
    pub(super) degraded: AtomicBool,
    pub(super) last_error: Mutex<Option<String>>,
    /// Lease scripts run, for the tests and the benchmark's arithmetic.
    pub(super) round_trips: AtomicU64,
}

/// KEYS: request TAT, token TAT. ARGV: request interval, token interval, period, token debt,
/// units wanted, request budget given back (µs). A refused request is granted nothing; a
/// request that fits is granted as many of the wanted units as the budget still holds.
const LEASE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function px(us) return string.format('%.0f', math.ceil(us / 1000) + 1) end
local ri, ti, p, debt = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local want, refund = tonumber(ARGV[5]), tonumber(ARGV[6])
local rtat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0') - refund, now)
local ttat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
if debt > 0 then
  ttat = ttat + debt
  redis.call('SET', KEYS[2], string.format('%.0f', ttat), 'PX', px(ttat - now))
end
local allowed, retry, units = 1, 0, want
if ti > 0 and ttat - now >= p then
  allowed, retry = 0, ttat - now - p + ti
end
if ri > 0 then
  local room = math.floor((p - (rtat - now)) / ri)
  if room < 1 then
    allowed, retry = 0, math.max(retry, rtat + ri - now - p)
  end
  units = math.min(want, room)
end
if allowed == 0 then
  units = 0
end
if ri > 0 and (units > 0 or refund > 0) then
  rtat = rtat + units * ri
  redis.call('SET', KEYS[1], string.format('%.0f', rtat), 'PX', px(rtat - now))
end
return {allowed, string.format('%.0f', retry), string.format('%.0f', rtat - now),
  string.format('%.0f', ttat - now), units}
";

const DEBIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function px(us) return string.format('%.0f', math.ceil(us / 1000) + 1) end
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', px(tat - now))
return 1
";

impl RedisLimits {
    /// `url`: a malformed URL is an error (a Redis that is down is not).
    pub(super) fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisLimits, String> {
        let manager = RedisConnectionManager::new(url)
            .map_err(|e| format!("cache.redis_url `{url}` is not a Redis URL: {e}"))?;
        let pool = bb8::Pool::builder()
            .max_size(16)
            .connection_timeout(timeout)
            .test_on_check_out(false)
            .build_unchecked(manager);
        Ok(RedisLimits {
            pool,
            prefix: format!("{prefix}:rl:"),
            timeout,
            lease: redis::Script::new(LEASE),
            debit: redis::Script::new(DEBIT),
            pending: Mutex::new(HashMap::new()),
            degraded_until: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            last_error: Mutex::new(None),
            round_trips: AtomicU64::new(0),
        })
    }

    pub(super) fn take_pending(&self, id: &str) -> u64 {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.remove(id).unwrap_or(0)
    }

    pub(super) fn add_pending(&self, id: &str, cost: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        // Every metered request debits: allocate the id only for the first since a flush.
        match pending.get_mut(id) {
            Some(debt) => *debt = debt.saturating_add(cost),
            None => drop(pending.insert(id.to_string(), cost)),
        }
    }

    pub(super) fn usable(&self, now: u64) -> bool {
        self.degraded_until.load(Ordering::Acquire) <= now
    }

    pub(super) fn failed(&self, error: &str, now: u64) {
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

    /// One request, plus up to `want - 1` more for this process to admit alone; `refund`
    /// gives back the unused part of the principal's last lease.
    pub(super) async fn lease(
        &self,
        id: &str,
        intervals: (u64, u64),
        debt: u64,
        want: u64,
        refund: u64,
    ) -> Result<Grant, String> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let work = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            let (allowed, retry, used_r, used_t, units): (i64, String, String, String, i64) = self
                .lease
                .key(format!("{}{id}:r", self.prefix))
                .key(format!("{}{id}:t", self.prefix))
                .arg(intervals.0)
                .arg(intervals.1)
                .arg(PERIOD_US)
                .arg(debt)
                .arg(want)
                .arg(refund)
                .invoke_async(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
            let num = |s: &str| s.parse::<f64>().map(|v| v.max(0.0) as u64);
            match (num(&retry), num(&used_r), num(&used_t)) {
                (Ok(retry), Ok(used_requests), Ok(used_tokens)) => Ok(Grant {
                    allowed: allowed == 1,
                    retry,
                    used_requests,
                    used_tokens,
                    units: u64::try_from(units).unwrap_or(0),
                }),
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

    pub(super) async fn debit(&self, key: &str, cost: u64) -> Result<(), String> {
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
