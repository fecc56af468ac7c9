//! The core's contract with the embedding cache, and cache keys.
//!
//! A key is SHA-256 over a versioned namespace, the model's identity (name, backend, upstream
//! name or graph digest, revision) and every option that changes the vector (dimensions,
//! normalize, truncate, prompt prefix) and the exact input text, each field length-prefixed so
//! no two different requests can collide by concatenation. Leaving one out is how other gateways
//! served vectors computed under other options; the tests change each one.
//!
//! The first four bytes of a key are not the digest's but the model's tag (a digest of its
//! canonical name alone), so every key of one model shares a prefix: a store can drop one
//! model's vectors (`citadel cache flush --model`) without knowing how keys are derived.

use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

/// Bump to orphan every cached vector (a change in how vectors are computed or stored).
/// v2: keys open with the model's tag.
const KEY_VERSION: &[u8] = b"citadel-embedding-cache-v2";

/// A cache key: the model's tag, then 28 bytes of the SHA-256 digest.
pub type CacheKey = [u8; 32];

/// What every key of one model begins with.
pub type ModelTag = [u8; 4];

/// The tag of a model's keys: the same for every revision and option, different per name
/// (two names share one with odds of 1 in 4 billion; a flush then also drops the other's).
pub fn model_tag(canonical_name: &str) -> ModelTag {
    let mut hasher = Sha256::new();
    field(&mut hasher, b"citadel-model-tag");
    field(&mut hasher, canonical_name.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// How far a flush of one model has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushProgress {
    /// The model's keys deleted from the shared store so far.
    pub deleted: u64,
}

/// A cached vector and the tokens its input counted (so a cached answer reports the same
/// usage as a computed one), shared between the cache and the responses built from it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedEmbedding {
    pub vector: Arc<[f32]>,
    pub tokens: u32,
}

/// Which way the server's cache works (`cache.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    On,
    Off,
    /// Serve hits, store nothing (e.g. a canary reading a shared Redis).
    ReadOnly,
    /// Store, never serve (e.g. warming before switching reads on).
    WriteOnly,
}

impl CacheMode {
    pub fn reads(self) -> bool {
        matches!(self, CacheMode::On | CacheMode::ReadOnly)
    }

    pub fn writes(self) -> bool {
        matches!(self, CacheMode::On | CacheMode::WriteOnly)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::On => "on",
            CacheMode::Off => "off",
            CacheMode::ReadOnly => "read_only",
            CacheMode::WriteOnly => "write_only",
        }
    }
}

/// One request's use of the cache (REST `Cache-Control`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CachePolicy {
    #[default]
    Default,
    /// Compute afresh, then store.
    NoCache,
    /// Neither read nor store.
    NoStore,
}

/// One level's state and counters.
#[derive(Debug, Clone, Default)]
pub struct CacheLevelStatus {
    /// "ok", "degraded" or "disabled".
    pub state: &'static str,
    pub last_error: Option<String>,
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct CacheStatus {
    pub mode: &'static str,
    pub l1: CacheLevelStatus,
    pub l2: CacheLevelStatus,
    pub ttl_seconds: u64,
    /// Inputs served from the cache over inputs looked up.
    pub hit_rate: f64,
}

/// Where vectors are kept between requests. Implementations never fail a request: a level
/// that is down is skipped (and reported in `status`).
#[async_trait]
pub trait EmbeddingCache: Send + Sync + 'static {
    fn mode(&self) -> CacheMode;

    /// One answer per key, in order; a stored value of the wrong length is a miss.
    async fn get_many(&self, keys: &[CacheKey], dims: usize) -> Vec<Option<CachedEmbedding>>;

    /// Stores freshly computed vectors (without delaying the caller on a slow store).
    fn put_many(&self, entries: Vec<(CacheKey, CachedEmbedding)>);

    fn status(&self) -> CacheStatus;

    /// Drops every vector of the model with `tag` from each level, calling `progress` as a
    /// shared store is worked through. Fails when a level that holds vectors cannot be reached:
    /// a flush that did not happen must not look done.
    async fn flush_model(
        &self,
        tag: ModelTag,
        progress: &(dyn Fn(FlushProgress) + Send + Sync),
    ) -> Result<FlushProgress, String>;
}

/// What in a request decides the vector, besides the text.
pub(crate) struct KeyOptions<'a> {
    /// The canonical name: the key's tag.
    pub(crate) model: &'a str,
    pub(crate) identity: &'a str,
    pub(crate) dimensions: usize,
    pub(crate) normalize: bool,
    pub(crate) truncate: bool,
    pub(crate) prefix: &'a str,
}

impl KeyOptions<'_> {
    /// Hashes the options once; each text then only adds its own bytes.
    pub(crate) fn hasher(&self) -> KeyHasher {
        let mut hasher = Sha256::new();
        field(&mut hasher, KEY_VERSION);
        field(&mut hasher, self.identity.as_bytes());
        hasher.update((self.dimensions as u64).to_le_bytes());
        hasher.update([u8::from(self.normalize), u8::from(self.truncate)]);
        field(&mut hasher, self.prefix.as_bytes());
        KeyHasher {
            options: hasher,
            tag: model_tag(self.model),
        }
    }
}

/// One request's options, hashed, and its model's tag.
pub(crate) struct KeyHasher {
    options: Sha256,
    tag: ModelTag,
}

pub(crate) fn key(options: &KeyHasher, text: &str) -> CacheKey {
    let mut hasher = options.options.clone();
    field(&mut hasher, text.as_bytes());
    let mut key: CacheKey = hasher.finalize().into();
    key[..4].copy_from_slice(&options.tag);
    key
}

fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(identity: &str, prefix: &str) -> KeyOptions<'static> {
        KeyOptions {
            model: "m",
            identity: Box::leak(identity.to_string().into_boxed_str()),
            dimensions: 384,
            normalize: true,
            truncate: true,
            prefix: Box::leak(prefix.to_string().into_boxed_str()),
        }
    }

    #[test]
    fn every_field_changes_the_key_and_fields_cannot_run_together() {
        let base = key(&options("m", "").hasher(), "text");
        assert_eq!(base, key(&options("m", "").hasher(), "text"));
        let mut changed = vec![
            key(&options("m2", "").hasher(), "text"),
            key(&options("m", "q: ").hasher(), "text"),
            key(&options("m", "").hasher(), "text "),
            // "ab" + "" versus "a" + "b": length prefixes keep them apart.
            key(&options("m", "te").hasher(), "xt"),
        ];
        for (i, tweak) in [0usize, 1, 2].into_iter().enumerate() {
            let mut o = options("m", "");
            match tweak {
                0 => o.dimensions = 128,
                1 => o.normalize = false,
                _ => o.truncate = false,
            }
            changed.push(key(&o.hasher(), "text"));
            assert_ne!(changed[changed.len() - 1], base, "tweak {i}");
        }
        for k in &changed {
            assert_ne!(*k, base);
        }
    }

    #[test]
    fn every_key_of_a_model_opens_with_its_tag() {
        let mut other = options("m", "");
        other.model = "m2";
        let (a, b) = (
            key(&options("m", "").hasher(), "x"),
            key(&other.hasher(), "x"),
        );
        assert_eq!(a[..4], model_tag("m"));
        assert_eq!(b[..4], model_tag("m2"));
        assert_ne!(model_tag("m"), model_tag("m2"));
        // The rest is the digest's: the same text under the same options.
        assert_eq!(a[4..], b[4..]);
    }
}
