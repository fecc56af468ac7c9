//! Workflow metrics: submits, attempts by outcome, how long work waits to start and runs, what
//! runs now, lease expiries, and the queue monitor's census (depth by state and kind, the
//! oldest due workflow's age, whether the database answers). Every process records its own:
//! `citadel serve` on its `/metrics`, `citadel worker` on its operations port.

use std::sync::OnceLock;

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Gauge, Histogram, UpDownCounter},
};

pub(crate) struct WorkflowMetrics {
    submitted: Counter<u64>,
    attempts: Counter<u64>,
    queue_wait: Histogram<f64>,
    duration: Histogram<f64>,
    running: UpDownCounter<i64>,
    lease_expiries: Counter<u64>,
    queue_depth: Gauge<u64>,
    oldest_pending_age: Gauge<f64>,
    database_up: Gauge<u64>,
}

const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 1800.0,
];

pub(crate) fn metrics() -> &'static WorkflowMetrics {
    static METRICS: OnceLock<WorkflowMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = global::meter("citadel.workflows");
        WorkflowMetrics {
            submitted: meter
                .u64_counter("citadel.workflows.submitted")
                .with_description("Submits by kind; deduplicated=true when an idempotency key matched")
                .build(),
            attempts: meter
                .u64_counter("citadel.workflows.attempts")
                .with_description(
                    "Ended attempts by kind and outcome (SUCCESS, RETRY, FAILURE, CANCELLED, lost, released)",
                )
                .build(),
            queue_wait: meter
                .f64_histogram("citadel.workflows.queue_wait")
                .with_unit("s")
                .with_description("From when a workflow was due (submit, backoff end) to its start")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            duration: meter
                .f64_histogram("citadel.workflows.attempt_duration")
                .with_unit("s")
                .with_description("Run time of one attempt")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            running: meter
                .i64_up_down_counter("citadel.workflows.running")
                .with_description("Attempts running in this process")
                .build(),
            lease_expiries: meter
                .u64_counter("citadel.workflows.lease_expiries")
                .with_description(
                    "Attempts taken back because their worker stopped heartbeating, by kind",
                )
                .build(),
            queue_depth: meter
                .u64_gauge("citadel.workflows.queue_depth")
                .with_description(
                    "Unfinished workflows by state (PENDING, STARTED, RETRY) and kind, in the \
                     shared database: every process reports the same count",
                )
                .build(),
            oldest_pending_age: meter
                .f64_gauge("citadel.workflows.oldest_pending_age")
                .with_unit("s")
                .with_description("How long the oldest due PENDING or RETRY workflow has waited, by kind")
                .build(),
            database_up: meter
                .u64_gauge("citadel.workflows.database_up")
                .with_description("1 when this process's last probe of the workflow database succeeded")
                .build(),
        }
    })
}

impl WorkflowMetrics {
    pub(crate) fn submitted(&self, kind: &str, created: bool) {
        let attrs = [
            KeyValue::new("kind", kind.to_string()),
            KeyValue::new("deduplicated", !created),
        ];
        self.submitted.add(1, &attrs);
    }

    pub(crate) fn started(&self, kind: &str, waited_us: i64) {
        let kind = KeyValue::new("kind", kind.to_string());
        #[allow(clippy::cast_precision_loss)]
        self.queue_wait
            .record(waited_us.max(0) as f64 / 1e6, std::slice::from_ref(&kind));
        self.running.add(1, &[kind]);
    }

    pub(crate) fn ended(&self, kind: &str, outcome: &'static str, ran: std::time::Duration) {
        let kind = KeyValue::new("kind", kind.to_string());
        self.running.add(-1, std::slice::from_ref(&kind));
        self.duration
            .record(ran.as_secs_f64(), std::slice::from_ref(&kind));
        self.attempts
            .add(1, &[kind, KeyValue::new("outcome", outcome)]);
    }

    pub(crate) fn lease_expired(&self, kind: &str) {
        self.lease_expiries
            .add(1, &[KeyValue::new("kind", kind.to_string())]);
    }

    pub(crate) fn lease_expiries_seen(&self, kind: &str) {
        self.lease_expiries
            .add(0, &[KeyValue::new("kind", kind.to_string())]);
    }

    pub(crate) fn queue_depth(&self, state: &str, kind: &str, count: u64) {
        let attrs = [
            KeyValue::new("state", state.to_string()),
            KeyValue::new("kind", kind.to_string()),
        ];
        self.queue_depth.record(count, &attrs);
    }

    pub(crate) fn oldest_pending_age(&self, kind: &str, seconds: f64) {
        self.oldest_pending_age
            .record(seconds, &[KeyValue::new("kind", kind.to_string())]);
    }

    pub(crate) fn database_up(&self, up: bool) {
        self.database_up.record(u64::from(up), &[]);
    }
}
