//! Upstream metrics: attempts by outcome, their latency, retries, and each endpoint's breaker
//! (`citadel_upstream_breaker_state`: 0 closed, 1 half-open, 2 open).

use std::time::Duration;

use crate::BreakerState;
use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Gauge, Histogram},
};

pub(crate) struct UpstreamMetrics {
    attempts: Counter<u64>,
    duration: Histogram<f64>,
    retries: Counter<u64>,
    breaker_state: Gauge<u64>,
    transitions: Counter<u64>,
}

impl UpstreamMetrics {
    pub(crate) fn new() -> Self {
        let meter = global::meter("citadel.upstream");
        UpstreamMetrics {
            attempts: meter
                .u64_counter("citadel.upstream.attempts")
                .with_description("Calls to upstream servers by route, endpoint and outcome")
                .build(),
            duration: meter
                .f64_histogram("citadel.upstream.duration")
                .with_unit("s")
                .with_description(
                    "Time of one attempt on an upstream server (to the first chunk for streams)",
                )
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .build(),
            retries: meter
                .u64_counter("citadel.upstream.retries")
                .with_description("Attempts made after a failed one")
                .build(),
            breaker_state: meter
                .u64_gauge("citadel.upstream.breaker_state")
                .with_description("Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open")
                .build(),
            transitions: meter
                .u64_counter("citadel.upstream.breaker_transitions")
                .with_description("Circuit breaker state changes per endpoint")
                .build(),
        }
    }

    pub(crate) fn attempt(
        &self,
        model: &str,
        endpoint: &str,
        outcome: &'static str,
        took: Duration,
    ) {
        let attrs = [
            KeyValue::new("model", model.to_string()),
            KeyValue::new("endpoint", endpoint.to_string()),
        ];
        self.duration.record(took.as_secs_f64(), &attrs);
        let [model, endpoint] = attrs;
        self.attempts
            .add(1, &[model, endpoint, KeyValue::new("outcome", outcome)]);
    }

    pub(crate) fn retry(&self, model: &str) {
        self.retries
            .add(1, &[KeyValue::new("model", model.to_string())]);
    }

    pub(crate) fn breaker(&self, model: &str, endpoint: &str, state: BreakerState) {
        let (value, label) = match state {
            BreakerState::Closed => (0, "closed"),
            BreakerState::HalfOpen => (1, "half_open"),
            BreakerState::Open => (2, "open"),
        };
        let attrs = [
            KeyValue::new("model", model.to_string()),
            KeyValue::new("endpoint", endpoint.to_string()),
        ];
        self.breaker_state.record(value, &attrs);
        let [model, endpoint] = attrs;
        self.transitions
            .add(1, &[model, endpoint, KeyValue::new("to", label)]);
    }

    /// Publishes a closed breaker for a new endpoint, so the series exists before any trouble.
    pub(crate) fn register(&self, model: &str, endpoint: &str) {
        let attrs = [
            KeyValue::new("model", model.to_string()),
            KeyValue::new("endpoint", endpoint.to_string()),
        ];
        self.breaker_state.record(0, &attrs);
    }
}
