//! What a router needs to know, already validated by the configuration.

use std::time::Duration;

/// An endpoint's own limits. The caller's deadline, and the route's limit on one attempt, may
/// cut each of them shorter.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP (and TLS) connection set-up.
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// Longest pause between two pieces of a response body.
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// For logs, metrics and health; the URL when the operator gave none.
    pub name: String,
    /// Base URL: `http://host:11434`, `http://host:8000`, or one ending in `/v1`.
    pub url: String,
    /// Share of the traffic relative to the router's other endpoints.
    pub weight: u32,
    /// Sent as `Authorization: Bearer ...`.
    pub api_key: Option<String>,
    pub timeouts: Timeouts,
}

/// Attempts in all (the first included) and backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

/// When an endpoint's breaker opens, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before one trial request is let through.
    pub open_for: Duration,
}

#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// What the router serves (a model, or the LLM fleet): labels its logs and metrics.
    pub name: String,
    pub endpoints: Vec<EndpointSettings>,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
}
