//! The embedding cache's storage: an in-process L1 (moka, bounded by bytes, with a TTL) in
//! front of a shared Redis L2 (bb8-redis, raw little-endian f32 values, TTL 24 h by default).
//!
//! This crate owns where vectors are kept and how a level failing is survived (Redis down means
//! "degraded", never an error). It must not decide what a key means or when the cache may be
//! used for a request: keys, cache policies, partial hits and single flight belong to the
//! embedding core, which sees this crate only through its `EmbeddingCache` trait.

#![forbid(unsafe_code)]

mod codec;
mod l2;
mod metrics;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use citadel_embeddings::{
    CacheKey, CacheLevelStatus, CacheMode, CacheStatus, CachedEmbedding, EmbeddingCache,
    FlushProgress, ModelTag,
};

use crate::{l2::RedisLevel, metrics::CacheMetrics};

#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub mode: CacheMode,
    pub ttl: Duration,
    pub l1_max_bytes: u64,
    /// `None`: no L2.
    pub redis_url: Option<String>,
    pub redis_timeout: Duration,
    pub key_prefix: String,
}

pub struct TwoLevelCache {
    mode: CacheMode,
    ttl: Duration,
    /// `None` when `l1_max_bytes` is 0: every lookup goes to Redis.
    l1: Option<moka::sync::Cache<CacheKey, CachedEmbedding>>,
    l1_hits: AtomicU64,
    l1_misses: AtomicU64,
    l2: Option<Arc<RedisLevel>>,
    metrics: Arc<CacheMetrics>,
}

impl TwoLevelCache {
    /// Builds both levels; needs a Tokio runtime. Fails only on a malformed Redis URL.
    pub fn new(settings: CacheSettings) -> Result<Self, String> {
        let metrics = Arc::new(CacheMetrics::new());
        let l1 = (settings.l1_max_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(settings.l1_max_bytes)
                .weigher(|_key, entry: &CachedEmbedding| {
                    // The key, the vector, and moka's own bookkeeping (about 100 bytes).
                    u32::try_from(32 + 100 + entry.vector.len() * 4).unwrap_or(u32::MAX)
                })
                .time_to_live(settings.ttl)
                // A flush drops one model's entries by their key's tag.
                .support_invalidation_closures()
                .build()
        });
        let l2 = match &settings.redis_url {
            Some(url) => Some(RedisLevel::new(
                url,
                &settings.key_prefix,
                settings.ttl,
                settings.redis_timeout,
                metrics.clone(),
            )?),
            None => None,
        };
        Ok(TwoLevelCache {
            mode: settings.mode,
            ttl: settings.ttl,
            l1,
            l1_hits: AtomicU64::new(0),
            l1_misses: AtomicU64::new(0),
            l2,
            metrics,
        })
    }
}

impl TwoLevelCache {
    /// Drops one model's L1 entries. Lazy: moka checks the predicate on each entry written
    /// before it as the entry is next read or evicted.
    fn flush_l1(&self, tag: ModelTag) -> Result<(), String> {
        match &self.l1 {
            Some(l1) => l1
                .invalidate_entries_if(move |key, _| key[..4] == tag)
                .map(|_| ())
                .map_err(|e| format!("L1: {e}")),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl EmbeddingCache for TwoLevelCache {
    fn mode(&self) -> CacheMode {
        self.mode
    }

    async fn get_many(&self, keys: &[CacheKey], dims: usize) -> Vec<Option<CachedEmbedding>> {
        let mut found: Vec<Option<CachedEmbedding>> = match &self.l1 {
            Some(l1) => keys
                .iter()
                .map(|k| l1.get(k).filter(|v| v.vector.len() == dims))
                .collect(),
            None => vec![None; keys.len()],
        };
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        let l1_hits = (keys.len() - missing.len()) as u64;
        self.l1_hits.fetch_add(l1_hits, Ordering::Relaxed);
        self.l1_misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        self.metrics.lookups("l1", l1_hits, missing.len() as u64);
        let Some(l2) = self.l2.as_ref().filter(|_| !missing.is_empty()) else {
            return found;
        };
        let wanted: Vec<CacheKey> = missing.iter().map(|&i| keys[i]).collect();
        for (&i, value) in missing.iter().zip(l2.get_many(&wanted, dims).await) {
            if let Some(v) = value {
                // Promote: the next lookup stays in process.
                if let Some(l1) = &self.l1 {
                    l1.insert(keys[i], v.clone());
                }
                found[i] = Some(v);
            }
        }
        found
    }

    fn put_many(&self, entries: Vec<(CacheKey, CachedEmbedding)>) {
        let bytes: usize = entries.iter().map(|(_, e)| e.vector.len() * 4).sum();
        if let Some(l1) = &self.l1 {
            for (key, vector) in &entries {
                l1.insert(*key, vector.clone());
            }
            self.metrics.written("l1", bytes as u64);
        }
        if let Some(l2) = &self.l2 {
            l2.put_many(entries);
        }
    }

    async fn flush_model(
        &self,
        tag: ModelTag,
        progress: &(dyn Fn(FlushProgress) + Send + Sync),
    ) -> Result<FlushProgress, String> {
        // Memory before and after Redis: a lookup during the walk may copy a vector not yet
        // deleted from Redis back into memory, and the second pass drops that copy too.
        self.flush_l1(tag)?;
        let done = match &self.l2 {
            Some(l2) => l2
                .flush(tag, progress)
                .await
                .map_err(|e| format!("Redis: {e}"))?,
            None => FlushProgress::default(),
        };
        self.flush_l1(tag)?;
        Ok(done)
    }

    fn status(&self) -> CacheStatus {
        let l1 = CacheLevelStatus {
            state: if self.l1.is_some() { "ok" } else { "disabled" },
            last_error: None,
            hits: self.l1_hits.load(Ordering::Relaxed),
            misses: self.l1_misses.load(Ordering::Relaxed),
            errors: 0,
            entries: self.l1.as_ref().map_or(0, |l1| l1.entry_count()),
            bytes: self.l1.as_ref().map_or(0, |l1| l1.weighted_size()),
        };
        let l2 = match &self.l2 {
            Some(l2) => l2.status(),
            None => CacheLevelStatus {
                state: "disabled",
                ..CacheLevelStatus::default()
            },
        };
        // Every lookup starts at L1 (or skips a disabled one and counts as its miss).
        let lookups = l1.hits + l1.misses;
        let hit_rate = match lookups {
            0 => 0.0,
            n => (l1.hits + l2.hits) as f64 / n as f64,
        };
        CacheStatus {
            mode: self.mode.as_str(),
            l1,
            l2,
            ttl_seconds: self.ttl.as_secs(),
            hit_rate,
        }
    }
}
