//! Power of two choices: draw two endpoints at random in proportion to their weights, send to
//! the one with less load per unit of weight (then the faster one). Load is our own requests in
//! flight plus what the server last reported (vLLM's queue, set by the adapter), because a
//! scraped gauge lags and our own count does not. It spreads load almost as well as
//! least-loaded without every caller piling onto the same endpoint.

use std::sync::Arc;

use tokio::time::Instant;

use crate::{breaker::Admission, endpoint::Endpoint};

/// Picks one of `candidates` whose breaker admits a request, preferring those not in `tried`.
pub(crate) fn pick(
    endpoints: &[Arc<Endpoint>],
    candidates: &[usize],
    tried: &[usize],
    now: Instant,
) -> Option<(usize, Admission)> {
    let admitted: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| endpoints[i].breaker.admits(now))
        .collect();
    let fresh: Vec<usize> = admitted
        .iter()
        .copied()
        .filter(|i| !tried.contains(i))
        .collect();
    let mut pool = if fresh.is_empty() { admitted } else { fresh };
    let first = draw(endpoints, &mut pool)?;
    let mut order = match draw(endpoints, &mut pool) {
        Some(second) if lighter(&endpoints[second], &endpoints[first]) => vec![second, first],
        Some(second) => vec![first, second],
        None => vec![first],
    };
    // Another caller may take a half-open trial between `admits` and here: try the rest.
    order.extend(pool);
    order
        .into_iter()
        .find_map(|i| endpoints[i].breaker.try_acquire(now).map(|a| (i, a)))
}

/// Removes and returns one index from `pool`, drawn in proportion to weight.
fn draw(endpoints: &[Arc<Endpoint>], pool: &mut Vec<usize>) -> Option<usize> {
    let total: u64 = pool.iter().map(|&i| u64::from(endpoints[i].weight)).sum();
    if total == 0 {
        return None;
    }
    let mut ticket = fastrand::u64(0..total);
    let at = pool.iter().position(|&i| {
        let w = u64::from(endpoints[i].weight);
        if ticket < w {
            true
        } else {
            ticket -= w;
            false
        }
    })?;
    Some(pool.swap_remove(at))
}

/// Less load per unit of weight; on a tie, the lower smoothed latency.
fn lighter(a: &Endpoint, b: &Endpoint) -> bool {
    let load_a = u64::from(a.load() + 1) * u64::from(b.weight);
    let load_b = u64::from(b.load() + 1) * u64::from(a.weight);
    load_a < load_b || (load_a == load_b && a.latency_us() < b.latency_us())
}
