//! The leased limits against a real Redis (127.0.0.1:6379, which the test command starts):
//! two limiters stand for two replicas sharing one budget.

use std::{sync::atomic::Ordering, time::Duration};

use super::{Limiter, Verdict};
use crate::permission::Limits;

fn shared_pair(name: &str) -> (Limiter, Limiter) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let prefix = format!("citadel-test-lease-{name}-{}-{nanos}", std::process::id());
    let make = || {
        Limiter::new(
            Some("redis://127.0.0.1:6379"),
            &prefix,
            Duration::from_millis(500),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    (make(), make())
}

fn round_trips(limiter: &Limiter) -> u64 {
    limiter
        .redis
        .as_ref()
        .map_or(0, |r| r.round_trips.load(Ordering::Relaxed))
}

#[tokio::test]
async fn two_replicas_never_admit_more_than_the_limit_between_them() {
    let (one, two) = shared_pair("exact");
    let limits = Limits { rpm: 2_000, tpm: 0 };
    let started = std::time::Instant::now();
    let mut admitted = 0u64;
    for _ in 0..3_000 {
        let mut refused = 0;
        for limiter in [&one, &two] {
            match limiter.admit("key", limits).await {
                Verdict::Allowed(_) => admitted += 1,
                Verdict::Limited { retry_after, .. } => {
                    assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
                    refused += 1;
                }
            }
        }
        if refused == 2 {
            break;
        }
    }
    assert!(
        !one.status().degraded && !two.status().degraded,
        "Redis failed"
    );
    // The budget refills at 2,000 a minute while the loop runs.
    let refilled = (started.elapsed().as_secs_f64() * 2_000.0 / 60.0).ceil() as u64 + 1;
    assert!(
        (2_000..=2_000 + refilled).contains(&admitted),
        "{admitted} admitted, limit 2,000 (+{refilled} refilled)"
    );
    let trips = round_trips(&one) + round_trips(&two);
    assert!(
        trips * 3 < admitted,
        "{trips} round trips for {admitted} requests: slices were not used"
    );
}

#[tokio::test]
async fn a_slice_s_unused_units_are_given_back() {
    let (one, _) = shared_pair("refund");
    let limits = Limits { rpm: 2_000, tpm: 0 };
    // The budget refills one request per 30 ms: what the clock gives back is counted.
    let started = std::time::Instant::now();
    let refilled = || started.elapsed().as_micros() as u64 / 30_000;
    let mut last = 0;
    for _ in 0..100 {
        match one.admit("key", limits).await {
            Verdict::Allowed(state) => last = state.remaining_requests,
            Verdict::Limited { .. } => panic!("refused under the limit"),
        }
    }
    assert!(
        (1_900..=1_901 + refilled()).contains(&last),
        "remaining {last}: units held by the slice count as unspent"
    );
    // Slices of 1, 2, 4, 8, 16 and then 20 (1 % of the minute): the 100th request leaves 11
    // units in its slice, unless a slice ran out of time on the way.
    tokio::time::sleep(super::lease::LEASE_FOR + Duration::from_millis(50)).await;
    let Verdict::Allowed(state) = one.admit("key", limits).await else {
        panic!("refused under the limit");
    };
    let remaining = state.remaining_requests;
    assert!(
        remaining <= 1_900 + refilled(),
        "remaining {remaining} after the 101st request"
    );
    // Had the expired slice's units stayed spent in Redis, the answer would be 11 lower.
    assert!(
        remaining + 11 > 1_899 + refilled(),
        "remaining {remaining} after the 101st request, {} refilled",
        refilled()
    );
    assert!(!one.status().degraded, "Redis failed");
    assert!(
        round_trips(&one) > 5,
        "the requests did not go through Redis"
    );
}

#[tokio::test]
async fn a_tight_limit_asks_redis_for_every_request() {
    let (one, two) = shared_pair("tight");
    let limits = Limits { rpm: 10, tpm: 0 };
    let mut remaining = Vec::new();
    for i in 0..12 {
        let limiter = if i % 2 == 0 { &one } else { &two };
        if let Verdict::Allowed(state) = limiter.admit("key", limits).await {
            remaining.push(state.remaining_requests);
        }
    }
    assert_eq!(remaining, (0..10).rev().collect::<Vec<u64>>());
    assert_eq!(round_trips(&one) + round_trips(&two), 12);
}
