//! Request count and latency by route, method and status (`http_server_request_duration_seconds`
//! in Prometheus). Runs after routing so the route is the pattern, not the raw path.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use opentelemetry::{KeyValue, global, metrics::Histogram};

fn duration() -> &'static Histogram<f64> {
    static HISTOGRAM: OnceLock<Histogram<f64>> = OnceLock::new();
    HISTOGRAM.get_or_init(|| {
        global::meter("citadel.gateway")
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP requests at the REST edge")
            .with_boundaries(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .build()
    })
}

pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let attrs = [
        KeyValue::new("http.route", route),
        KeyValue::new("http.request.method", method),
        KeyValue::new(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        ),
    ];
    let elapsed = started.elapsed();
    duration().record(elapsed.as_secs_f64(), &attrs);
    TRAFFIC.record(elapsed);
    response
}

/// This process's request count and summed latency, read by the live metrics snapshots
/// (`/ws/orchestration`'s `metrics` topic) without parsing the exporter's text.
pub(crate) struct Traffic {
    requests: AtomicU64,
    latency_us: AtomicU64,
}

pub(crate) static TRAFFIC: Traffic = Traffic {
    requests: AtomicU64::new(0),
    latency_us: AtomicU64::new(0),
};

impl Traffic {
    fn record(&self, elapsed: std::time::Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency_us.fetch_add(us, Ordering::Relaxed);
    }

    /// (requests, summed latency in µs) so far.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.latency_us.load(Ordering::Relaxed),
        )
    }
}
