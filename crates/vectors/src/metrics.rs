//! Vector metrics: upsert and search latency (a search split into embedding and store time)
//! and points written, by store kind.

use std::{sync::OnceLock, time::Duration};

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram},
};

pub(crate) struct VectorMetrics {
    upsert: Histogram<f64>,
    search: Histogram<f64>,
    points: Counter<u64>,
}

const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub(crate) fn metrics() -> &'static VectorMetrics {
    static METRICS: OnceLock<VectorMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = global::meter("citadel.vectors");
        VectorMetrics {
            upsert: meter
                .f64_histogram("citadel.vectors.upsert_duration")
                .with_unit("s")
                .with_description("One UpsertPoints call, embedding included, by store")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            search: meter
                .f64_histogram("citadel.vectors.search_duration")
                .with_unit("s")
                .with_description("One search by stage: embed (the query text) or store")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            points: meter
                .u64_counter("citadel.vectors.points_written")
                .with_description("Points upserted, by store")
                .build(),
        }
    })
}

impl VectorMetrics {
    pub(crate) fn upserted(&self, store: &'static str, points: u64, took: Duration) {
        let attrs = [KeyValue::new("store", store)];
        self.upsert.record(took.as_secs_f64(), &attrs);
        self.points.add(points, &attrs);
    }

    pub(crate) fn searched(&self, store: &'static str, embed: Option<Duration>, took: Duration) {
        if let Some(embed) = embed {
            let attrs = [
                KeyValue::new("store", store),
                KeyValue::new("stage", "embed"),
            ];
            self.search.record(embed.as_secs_f64(), &attrs);
        }
        let attrs = [
            KeyValue::new("store", store),
            KeyValue::new("stage", "store"),
        ];
        self.search.record(took.as_secs_f64(), &attrs);
    }
}
