//! L2: Redis through a bb8 pool. One `MGET` per lookup and one pipelined `SET .. EX` per write,
//! never a round trip per input. Redis down, slow or restarted must not fail or slow requests
//! past `timeout`: the first failure marks the level degraded, requests skip it from then on,
//! and a background task pings through a fresh pool until Redis answers again, then swaps that
//! pool in (connections of the old one may point at a Redis that has restarted).

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use tracing::Instrument;

use bb8_redis::RedisConnectionManager;
use citadel_embeddings::{CacheKey, CacheLevelStatus, CachedEmbedding, FlushProgress, ModelTag};

use crate::{codec, metrics::CacheMetrics};

/// How often a degraded level checks whether Redis is back.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);
/// Writes are off the request path: they may take longer than lookups.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys a flush asks `SCAN` to look at per round: small enough that Redis never blocks long.
const FLUSH_SCAN_COUNT: u64 = 1000;

type Pool = bb8::Pool<RedisConnectionManager>;

pub(crate) struct RedisLevel {
    url: String,
    pool: RwLock<Pool>,
    prefix: String,
    ttl_secs: u64,
    timeout: Duration,
    degraded: AtomicBool,
    last_error: Mutex<Option<String>>,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    metrics: Arc<CacheMetrics>,
}

impl RedisLevel {
    /// Connects lazily: a Redis that is down at start degrades the cache, not the start.
    pub(crate) fn new(
        url: &str,
        key_prefix: &str,
        ttl: Duration,
        timeout: Duration,
        metrics: Arc<CacheMetrics>,
    ) -> Result<Arc<Self>, String> {
        let pool = new_pool(url, timeout)?;
        Ok(Arc::new(RedisLevel {
            url: url.to_string(),
            pool: RwLock::new(pool),
            prefix: format!("{key_prefix}:v1:"),
            ttl_secs: ttl.as_secs().max(1),
            timeout,
            degraded: AtomicBool::new(false),
            last_error: Mutex::new(None),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            metrics,
        }))
    }

    fn pool(&self) -> Pool {
        self.pool
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn redis_key(&self, key: &CacheKey) -> String {
        let mut out = String::with_capacity(self.prefix.len() + 64);
        out.push_str(&self.prefix);
        push_hex(&mut out, key);
        out
    }

    /// Deletes every key of one model: `SCAN MATCH` its prefix, then `UNLINK` each round's
    /// keys (freed off Redis's main thread). Runs whether or not requests see the level as
    /// degraded, so an operator gets Redis's own error rather than a skipped flush.
    pub(crate) async fn flush(
        &self,
        tag: ModelTag,
        progress: &(dyn Fn(FlushProgress) + Send + Sync),
    ) -> Result<FlushProgress, String> {
        let mut pattern = glob_escape(&self.prefix);
        push_hex(&mut pattern, &tag);
        pattern.push('*');
        let pool = self.pool();
        let limit = WRITE_TIMEOUT.max(self.timeout);
        let mut conn = tokio::time::timeout(limit, pool.get())
            .await
            .map_err(|_| format!("no connection within {}ms", limit.as_millis()))?
            .map_err(|e| format!("no connection ({e}): is Redis up at cache.redis_url?"))?;
        let (mut cursor, mut done) = (0u64, FlushProgress::default());
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(FLUSH_SCAN_COUNT);
            let scan = scan.query_async::<(u64, Vec<String>)>(&mut *conn);
            let (next, keys) = tokio::time::timeout(limit, scan)
                .await
                .map_err(|_| format!("SCAN: no answer within {}ms", limit.as_millis()))?
                .map_err(|e| format!("SCAN: {e}"))?;
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&keys);
                let unlink = unlink.query_async::<u64>(&mut *conn);
                done.deleted += tokio::time::timeout(limit, unlink)
                    .await
                    .map_err(|_| format!("UNLINK: no answer within {}ms", limit.as_millis()))?
                    .map_err(|e| format!("UNLINK: {e}"))?;
                progress(done);
            }
            if next == 0 {
                return Ok(done);
            }
            cursor = next;
        }
    }

    /// One answer per key; all `None` while degraded or when Redis fails within the timeout.
    pub(crate) async fn get_many(
        self: &Arc<Self>,
        keys: &[CacheKey],
        dims: usize,
    ) -> Vec<Option<CachedEmbedding>> {
        if keys.is_empty() || self.degraded.load(Ordering::Acquire) {
            return vec![None; keys.len()];
        }
        let names: Vec<String> = keys.iter().map(|k| self.redis_key(k)).collect();
        let work = async {
            let pool = self.pool();
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            redis::cmd("MGET")
                .arg(&names)
                .query_async::<Vec<Option<Vec<u8>>>>(&mut *conn)
                .await
                .map_err(|e| e.to_string())
        };
        // A big batch moves megabytes: give it time in proportion (2048 keys: +41 ms).
        let limit = self.timeout + Duration::from_micros(20 * keys.len() as u64);
        let span = citadel_telemetry::trace_span!("cache.l2.mget", keys = keys.len());
        let error = match tokio::time::timeout(limit, work).instrument(span).await {
            Ok(Ok(values)) if values.len() == keys.len() => return self.found(&values, dims),
            Ok(Ok(_)) => "MGET answered the wrong number of values".to_string(),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {}ms", limit.as_millis()),
        };
        self.failed("get", &error);
        vec![None; keys.len()]
    }

    fn found(&self, values: &[Option<Vec<u8>>], dims: usize) -> Vec<Option<CachedEmbedding>> {
        let found: Vec<Option<CachedEmbedding>> = values
            .iter()
            .map(|v| v.as_deref().and_then(|bytes| codec::decode(bytes, dims)))
            .collect();
        let hits = found.iter().filter(|v| v.is_some()).count() as u64;
        let misses = values.len() as u64 - hits;
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(misses, Ordering::Relaxed);
        self.metrics.lookups("l2", hits, misses);
        found
    }

    /// Stores in the background: one pipeline of `SET key value EX ttl`.
    pub(crate) fn put_many(self: &Arc<Self>, entries: Vec<(CacheKey, CachedEmbedding)>) {
        if entries.is_empty() || self.degraded.load(Ordering::Acquire) {
            return;
        }
        let level = self.clone();
        // Off the request path, but still part of its trace.
        let span = citadel_telemetry::trace_span!("cache.l2.set", keys = entries.len());
        let write = async move {
            let mut pipe = redis::pipe();
            let mut bytes = 0u64;
            for (key, vector) in &entries {
                let value = codec::encode(vector);
                bytes += value.len() as u64;
                pipe.cmd("SET")
                    .arg(level.redis_key(key))
                    .arg(value)
                    .arg("EX")
                    .arg(level.ttl_secs)
                    .ignore();
            }
            let work = async {
                let pool = level.pool();
                let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                pipe.query_async::<()>(&mut *conn)
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(WRITE_TIMEOUT, work).await {
                Ok(Ok(())) => level.metrics.written("l2", bytes),
                Ok(Err(e)) => level.failed("set", &e),
                Err(_) => level.failed("set", "no answer to the write pipeline"),
            }
        };
        tokio::spawn(write.instrument(span));
    }

    /// Counts the failure, degrades the level, and starts reconnecting (once).
    fn failed(self: &Arc<Self>, op: &'static str, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.metrics.error("l2", op);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string());
        }
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, "Redis cache unreachable: serving without L2 until it answers");
            tokio::spawn(self.clone().reconnect());
        }
    }

    async fn reconnect(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RECONNECT_EVERY).await;
            let Ok(pool) = new_pool(&self.url, self.timeout) else {
                return;
            };
            let ping = async {
                let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                redis::cmd("PING")
                    .query_async::<String>(&mut *conn)
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Ok(Ok(_)) = tokio::time::timeout(self.timeout, ping).await {
                *self
                    .pool
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = pool;
                self.degraded.store(false, Ordering::Release);
                tracing::info!("Redis cache reachable again");
                return;
            }
        }
    }

    pub(crate) fn status(&self) -> CacheLevelStatus {
        let degraded = self.degraded.load(Ordering::Acquire);
        CacheLevelStatus {
            state: if degraded { "degraded" } else { "ok" },
            last_error: self
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .filter(|_| degraded),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            entries: 0,
            bytes: 0,
        }
    }
}

/// Lowercase hex of `bytes` onto `out`; on the hot path (every key of every batch), so no
/// allocation per byte.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// `text` as a literal in a Redis glob pattern: a `key_prefix` may hold `*`, `?` or `[`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A lazily connecting pool: a Redis that is down makes lookups fail fast, not the start.
fn new_pool(url: &str, timeout: Duration) -> Result<Pool, String> {
    let manager = RedisConnectionManager::new(url)
        .map_err(|e| format!("cache.redis_url `{url}` is not a Redis URL: {e}"))?;
    Ok(bb8::Pool::builder()
        // Connections are checked out whole: background writes must not starve lookups.
        .max_size(16)
        .connection_timeout(timeout)
        // A PING per checkout would double the round trips; a failed operation degrades
        // the level and the reconnect swaps in a fresh pool.
        .test_on_check_out(false)
        .build_unchecked(manager))
}
