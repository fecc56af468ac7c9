//! Cache metrics per level: hits, misses, errors, bytes written.

use opentelemetry::{KeyValue, global, metrics::Counter};

pub(crate) struct CacheMetrics {
    hits: Counter<u64>,
    misses: Counter<u64>,
    errors: Counter<u64>,
    bytes: Counter<u64>,
}

impl CacheMetrics {
    pub(crate) fn new() -> Self {
        let meter = global::meter("citadel.cache");
        CacheMetrics {
            hits: meter
                .u64_counter("citadel.cache.hits")
                .with_description("Inputs found in a cache level")
                .build(),
            misses: meter
                .u64_counter("citadel.cache.misses")
                .with_description("Inputs looked up in a cache level and not found")
                .build(),
            errors: meter
                .u64_counter("citadel.cache.errors")
                .with_description("Failed cache operations by level and operation")
                .build(),
            bytes: meter
                .u64_counter("citadel.cache.written_bytes")
                .with_description("Bytes of vectors written to a cache level")
                .build(),
        }
    }

    pub(crate) fn lookups(&self, level: &'static str, hits: u64, misses: u64) {
        let attrs = [KeyValue::new("level", level)];
        self.hits.add(hits, &attrs);
        self.misses.add(misses, &attrs);
    }

    pub(crate) fn error(&self, level: &'static str, op: &'static str) {
        let attrs = [KeyValue::new("level", level), KeyValue::new("op", op)];
        self.errors.add(1, &attrs);
    }

    pub(crate) fn written(&self, level: &'static str, bytes: u64) {
        self.bytes.add(bytes, &[KeyValue::new("level", level)]);
    }
}
