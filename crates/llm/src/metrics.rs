//! LLM metrics: requests by outcome, time to first token, time between tokens, tokens by model
//! and server, and streams open now.

use std::time::Duration;

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram, UpDownCounter},
};

pub(crate) struct LlmMetrics {
    requests: Counter<u64>,
    ttft: Histogram<f64>,
    itl: Histogram<f64>,
    prompt_tokens: Counter<u64>,
    completion_tokens: Counter<u64>,
    active_streams: UpDownCounter<i64>,
}

const LATENCY_BOUNDS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0, 120.0,
];

impl LlmMetrics {
    pub(crate) fn new() -> Self {
        let meter = global::meter("citadel.llm");
        LlmMetrics {
            requests: meter
                .u64_counter("citadel.llm.requests")
                .with_description("Completions by model, kind (chat, text), stream and outcome")
                .build(),
            ttft: meter
                .f64_histogram("citadel.llm.time_to_first_token")
                .with_unit("s")
                .with_description("From the request to the first chunk of a stream")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            itl: meter
                .f64_histogram("citadel.llm.inter_token_latency")
                .with_unit("s")
                .with_description("Between two chunks of a stream")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            prompt_tokens: meter
                .u64_counter("citadel.llm.prompt_tokens")
                .with_description("Prompt tokens by model and server, from the servers' usage")
                .build(),
            completion_tokens: meter
                .u64_counter("citadel.llm.completion_tokens")
                .with_description("Completion tokens by model and server, from the servers' usage")
                .build(),
            active_streams: meter
                .i64_up_down_counter("citadel.llm.active_streams")
                .with_description("Completion streams open now")
                .build(),
        }
    }

    pub(crate) fn request(&self, model: &str, kind: &'static str, stream: bool, outcome: &str) {
        self.requests.add(
            1,
            &[
                KeyValue::new("model", model.to_string()),
                KeyValue::new("kind", kind),
                KeyValue::new("stream", stream),
                KeyValue::new("outcome", outcome.to_string()),
            ],
        );
    }

    pub(crate) fn ttft(&self, model: &str, took: Duration) {
        let attrs = [KeyValue::new("model", model.to_string())];
        self.ttft.record(took.as_secs_f64(), &attrs);
    }

    /// The attributes of one model, built once per stream rather than once per chunk.
    pub(crate) fn model_attrs(model: &str) -> [KeyValue; 1] {
        [KeyValue::new("model", model.to_string())]
    }

    pub(crate) fn itl(&self, attrs: &[KeyValue], took: Duration) {
        self.itl.record(took.as_secs_f64(), attrs);
    }

    pub(crate) fn tokens(&self, model: &str, server: &str, prompt: u32, completion: u32) {
        let attrs = [
            KeyValue::new("model", model.to_string()),
            KeyValue::new("server", server.to_string()),
        ];
        self.prompt_tokens.add(u64::from(prompt), &attrs);
        self.completion_tokens.add(u64::from(completion), &attrs);
    }

    pub(crate) fn stream_opened(&self, model: &str) {
        let attrs = [KeyValue::new("model", model.to_string())];
        self.active_streams.add(1, &attrs);
    }

    pub(crate) fn stream_closed(&self, model: &str) {
        let attrs = [KeyValue::new("model", model.to_string())];
        self.active_streams.add(-1, &attrs);
    }
}
