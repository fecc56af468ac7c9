//! The health vocabulary every routed service publishes: where a model is in its life, each
//! endpoint's breaker, and an endpoint as `/health/detailed` and `ListModels` show it.

use std::time::Duration;

/// Where a model is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    Loading,
    Ready,
    /// Could not load; permanent until restarted.
    Failed(String),
    /// Configured, but none of its upstream servers can answer now; recovers by itself.
    Unavailable(String),
}

/// One endpoint's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// One upstream server, as its router sees it now.
#[derive(Debug, Clone)]
pub struct EndpointView {
    /// The operator's name for it (`[[llm.servers]] name`), or its URL.
    pub name: String,
    pub url: String,
    pub weight: u32,
    pub breaker: BreakerState,
    pub outstanding: u32,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// Smoothed latency of recent answers (time to the first chunk for streams).
    pub latency: Duration,
}
