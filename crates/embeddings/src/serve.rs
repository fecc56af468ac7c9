//! One request through the cache: look every input up, compute only the misses (once across
//! concurrent requests), store them, and answer in input order.

use std::sync::Arc;

use crate::{
    EmbedError, EmbedParams, StageTiming,
    cache::{CacheKey, CachePolicy, CachedEmbedding, EmbeddingCache, KeyOptions, key},
    core::{EmbeddingCore, Entry},
    flight,
    metrics::metrics,
};

/// Times a request claims keys whose owner failed before it computes them without sharing.
const SHARING_ROUNDS: usize = 2;

/// Vectors in input order, and how they were obtained.
pub(crate) struct Served {
    pub(crate) vectors: Vec<Vec<f32>>,
    pub(crate) prompt_tokens: u64,
    pub(crate) timing: StageTiming,
    pub(crate) cached: usize,
}

impl EmbeddingCore {
    pub(crate) async fn serve(
        &self,
        entry: &Entry,
        params: &EmbedParams,
        dims: usize,
        prefix: &str,
    ) -> Result<Served, EmbedError> {
        let prefixed = |i: usize| format!("{prefix}{}", params.inputs[i]);
        let (read, write) = match (&self.cache, params.cache_policy) {
            (None, _) | (_, CachePolicy::NoStore) => (false, false),
            (Some(cache), CachePolicy::NoCache) => (false, cache.mode().writes()),
            (Some(cache), CachePolicy::Default) => (cache.mode().reads(), cache.mode().writes()),
        };
        let (Some(cache), true) = (&self.cache, read || write) else {
            let all = (0..params.inputs.len()).map(prefixed).collect();
            let computed = self.compute(entry, params, all, dims).await?;
            return Ok(Served {
                vectors: computed.vectors,
                prompt_tokens: computed.prompt_tokens,
                timing: computed.timing,
                cached: 0,
            });
        };

        let info = entry.backend.info();
        let options = KeyOptions {
            model: &info.name,
            identity: &info.identity,
            dimensions: dims,
            normalize: params.normalize,
            truncate: params.truncate,
            prefix,
        }
        .hasher();
        let keys: Vec<_> = params.inputs.iter().map(|t| key(&options, t)).collect();
        let mut slots: Vec<Option<CachedEmbedding>> = match read {
            true => cache.get_many(&keys, dims).await,
            false => vec![None; keys.len()],
        };
        let cached = slots.iter().filter(|s| s.is_some()).count();
        metrics().cache_lookup(&info.name, cached, keys.len() - cached);
        let missing: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].is_none()).collect();
        if missing.is_empty() {
            return assemble(slots, StageTiming::default(), cached);
        }

        let fill = Fill {
            entry,
            params,
            dims,
            prefix,
            keys: &keys,
            cache: write.then_some(cache.as_ref()),
        };
        // Claim the misses: compute those this request owns, wait for those another request
        // is computing. A key whose owner failed is claimed again, so one of its waiters
        // computes it for all; the last round computes whatever is left without sharing.
        let (mut pending, mut timing) = (missing, None);
        for round in 0..=SHARING_ROUNDS {
            if pending.is_empty() {
                break;
            }
            // Only a request that reads may share another's vectors: no-cache means fresh.
            let mut claim = match read && round < SHARING_ROUNDS {
                true => self.flights.claim(&keys, &pending),
                false => self.flights.claim_none(&pending),
            };
            let owned = std::mem::take(&mut claim.owned);
            if !owned.is_empty() {
                let took = self.fill(&fill, &owned, &mut slots).await?;
                timing.get_or_insert(took);
                let vectors: Vec<_> = owned.iter().filter_map(|&i| slots[i].clone()).collect();
                claim.publish(&vectors);
            }
            pending = Vec::new();
            for (i, slot) in std::mem::take(&mut claim.waiting) {
                match flight::wait(slot).await {
                    Some(v) => slots[i] = Some(v),
                    None => pending.push(i),
                }
            }
        }
        let timing = timing.unwrap_or_default();
        assemble(slots, timing, cached)
    }
}

/// What computing a set of inputs needs to know.
struct Fill<'a> {
    entry: &'a Entry,
    params: &'a EmbedParams,
    dims: usize,
    prefix: &'a str,
    keys: &'a [CacheKey],
    /// Where to store the results, if this request may write.
    cache: Option<&'a dyn EmbeddingCache>,
}

impl EmbeddingCore {
    /// Computes inputs `indices` into their `slots` and stores them; returns the timing.
    async fn fill(
        &self,
        fill: &Fill<'_>,
        indices: &[usize],
        slots: &mut [Option<CachedEmbedding>],
    ) -> Result<StageTiming, EmbedError> {
        let inputs = indices
            .iter()
            .map(|&i| format!("{}{}", fill.prefix, fill.params.inputs[i]))
            .collect();
        let computed = self
            .compute(fill.entry, fill.params, inputs, fill.dims)
            .await?;
        let vectors: Vec<CachedEmbedding> = computed
            .vectors
            .into_iter()
            .zip(computed.input_tokens)
            .map(|(vector, tokens)| CachedEmbedding {
                vector: Arc::from(vector),
                tokens,
            })
            .collect();
        if let Some(cache) = fill.cache {
            let keyed = indices.iter().map(|&i| fill.keys[i]).zip(vectors.clone());
            cache.put_many(keyed.collect());
        }
        for (&i, v) in indices.iter().zip(vectors) {
            slots[i] = Some(v);
        }
        Ok(computed.timing)
    }
}

/// Vectors in input order; usage counts every input's tokens, cached or computed, so the same
/// request always reports the same usage.
fn assemble(
    slots: Vec<Option<CachedEmbedding>>,
    timing: StageTiming,
    cached: usize,
) -> Result<Served, EmbedError> {
    let prompt_tokens = slots.iter().flatten().map(|e| u64::from(e.tokens)).sum();
    let vectors = slots
        .into_iter()
        .map(|v| v.map(|v| v.vector.to_vec()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| EmbedError::Backend {
            model: "cache".into(),
            message: "an input was left without a vector".into(),
        })?;
    Ok(Served {
        vectors,
        prompt_tokens,
        timing,
        cached,
    })
}
