//! Request-level embedding metrics (the backends record batch-level ones).

use std::sync::OnceLock;

use opentelemetry::{KeyValue, global, metrics::Counter};

pub(crate) struct CoreMetrics {
    requests: Counter<u64>,
    inputs: Counter<u64>,
    tokens: Counter<u64>,
    fallbacks: Counter<u64>,
    cache_inputs: Counter<u64>,
}

pub(crate) fn metrics() -> &'static CoreMetrics {
    static METRICS: OnceLock<CoreMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = global::meter("citadel.embeddings");
        CoreMetrics {
            requests: meter
                .u64_counter("citadel.embed.requests")
                .with_description("Embedding requests by model and outcome")
                .build(),
            inputs: meter
                .u64_counter("citadel.embed.inputs")
                .with_description("Inputs embedded")
                .build(),
            tokens: meter
                .u64_counter("citadel.embed.tokens")
                .with_description("Tokens processed by the model")
                .build(),
            cache_inputs: meter
                .u64_counter("citadel.cache.lookups")
                .with_description("Inputs looked up in the embedding cache, by result (hit, miss)")
                .build(),
            fallbacks: meter
                .u64_counter("citadel.embed.fallbacks")
                .with_description("Requests served by a model's fallback")
                .build(),
        }
    })
}

impl CoreMetrics {
    pub(crate) fn request(&self, model: &str, outcome: &'static str) {
        let attrs = [
            KeyValue::new("model", model.to_string()),
            KeyValue::new("outcome", outcome),
        ];
        self.requests.add(1, &attrs);
    }

    pub(crate) fn embedded(&self, model: &str, inputs: u64, tokens: u64) {
        let attrs = [KeyValue::new("model", model.to_string())];
        self.inputs.add(inputs, &attrs);
        self.tokens.add(tokens, &attrs);
    }

    pub(crate) fn fallback(&self, model: &str, to: &str) {
        let attrs = [
            KeyValue::new("model", model.to_string()),
            KeyValue::new("fallback", to.to_string()),
        ];
        self.fallbacks.add(1, &attrs);
    }

    pub(crate) fn cache_lookup(&self, model: &str, hits: usize, misses: usize) {
        for (result, n) in [("hit", hits), ("miss", misses)] {
            let attrs = [
                KeyValue::new("model", model.to_string()),
                KeyValue::new("result", result),
            ];
            self.cache_inputs.add(n as u64, &attrs);
        }
    }
}
