//! Single flight: identical cache misses in concurrent requests are computed once. The first
//! request to miss a key owns it; later ones wait for its vector. If the owner fails or goes
//! away, its waiters compute the key themselves, so one caller's deadline never fails another.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::watch;

use crate::cache::{CacheKey, CachedEmbedding};

type Slot = watch::Receiver<Option<CachedEmbedding>>;

#[derive(Default)]
pub(crate) struct Flights {
    inflight: Mutex<HashMap<CacheKey, Slot>>,
}

/// The keys one request must compute, and those it waits on. Dropping it ends its flights.
pub(crate) struct Claim {
    flights: Arc<Flights>,
    /// Input indices this request computes.
    pub(crate) owned: Vec<usize>,
    /// Input indices another flight (maybe this request's own, for a repeated text) computes.
    pub(crate) waiting: Vec<(usize, Slot)>,
    senders: Vec<(CacheKey, watch::Sender<Option<CachedEmbedding>>)>,
}

impl Flights {
    /// Claims `missing` input indices by their keys.
    pub(crate) fn claim(self: &Arc<Self>, keys: &[CacheKey], missing: &[usize]) -> Claim {
        let mut claim = Claim {
            flights: self.clone(),
            owned: Vec::new(),
            waiting: Vec::new(),
            senders: Vec::new(),
        };
        let mut inflight = self.lock();
        for &i in missing {
            if let Some(slot) = inflight.get(&keys[i]) {
                claim.waiting.push((i, slot.clone()));
            } else {
                let (tx, rx) = watch::channel(None);
                inflight.insert(keys[i], rx);
                claim.owned.push(i);
                claim.senders.push((keys[i], tx));
            }
        }
        claim
    }

    /// A claim that shares nothing: every missing index is computed by its own request.
    pub(crate) fn claim_none(self: &Arc<Self>, missing: &[usize]) -> Claim {
        Claim {
            flights: self.clone(),
            owned: missing.to_vec(),
            waiting: Vec::new(),
            senders: Vec::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Slot>> {
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Claim {
    /// Hands the owned keys' vectors (in `owned` order) to every waiter.
    pub(crate) fn publish(&mut self, vectors: &[CachedEmbedding]) {
        for ((_, tx), v) in self.senders.iter().zip(vectors) {
            tx.send_replace(Some(v.clone()));
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut inflight = self.flights.lock();
        for (key, _) in &self.senders {
            inflight.remove(key);
        }
    }
}

/// How long a waiter trusts another request to finish its inputs. An owner is only as fast as
/// its caller polls it (a slow-reading stream client stalls it), so past this the waiter
/// computes for itself rather than inherit that caller's pace.
const PATIENCE: Duration = Duration::from_secs(30);

/// A waiter's vector, or `None` if its owner ended without one or took too long.
pub(crate) async fn wait(mut slot: Slot) -> Option<CachedEmbedding> {
    let ready = slot.wait_for(Option::is_some);
    match tokio::time::timeout(PATIENCE, ready).await {
        Ok(Ok(value)) => value.clone(),
        _ => None,
    }
}
