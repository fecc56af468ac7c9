//! Every refusal leaves a trace: one structured log line on target `citadel::audit` (the
//! reason, the principal when known, the route; the request id comes from the caller's span;
//! never a credential) and a count in `citadel_auth_failures_total{reason}`, or in
//! `citadel_ratelimit_rejections_total` for a rate limit.

use std::sync::OnceLock;

use opentelemetry::{KeyValue, global, metrics::Counter};

pub(crate) fn audit(reason: &str, principal: Option<&str>, route: &str) {
    metrics()
        .failures
        .add(1, &[KeyValue::new("reason", reason.to_string())]);
    tracing::warn!(
        target: "citadel::audit",
        reason,
        principal = principal.unwrap_or("-"),
        route,
        "request refused"
    );
}

pub(crate) struct AuthMetrics {
    failures: Counter<u64>,
    pub(crate) rate_limited: Counter<u64>,
}

pub(crate) fn metrics() -> &'static AuthMetrics {
    static METRICS: OnceLock<AuthMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = global::meter("citadel.auth");
        AuthMetrics {
            failures: meter
                .u64_counter("citadel.auth.failures")
                .with_description("Refused requests by reason (missing_credentials, expired, bad_signature, permission_denied, ...)")
                .build(),
            rate_limited: meter
                .u64_counter("citadel.ratelimit.rejections")
                .with_description("Requests refused by a requests- or tokens-per-minute limit")
                .build(),
        }
    })
}
