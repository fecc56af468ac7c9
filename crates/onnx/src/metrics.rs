//! Batch-level metrics: run sizes, padded tokens, inference time, queue depth.

use std::time::Duration;

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram, UpDownCounter},
};

pub(crate) struct BatchMetrics {
    attrs: [KeyValue; 1],
    batch_size: Histogram<u64>,
    padded_tokens: Counter<u64>,
    inference: Histogram<f64>,
    queue_depth: UpDownCounter<i64>,
}

impl BatchMetrics {
    pub(crate) fn new(model: &str) -> Self {
        let meter = global::meter("citadel.onnx");
        BatchMetrics {
            attrs: [KeyValue::new("model", model.to_string())],
            batch_size: meter
                .u64_histogram("citadel.embed.batch_size")
                .with_description("Inputs per model run")
                .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
                .build(),
            padded_tokens: meter
                .u64_counter("citadel.embed.padded_tokens")
                .with_description("Tokens fed to the model including padding")
                .build(),
            inference: meter
                .f64_histogram("citadel.embed.inference_duration")
                .with_unit("s")
                .with_description("Time of one model run")
                .with_boundaries(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .build(),
            queue_depth: meter
                .i64_up_down_counter("citadel.embed.queue_depth")
                .with_description("Inputs waiting for a model run")
                .build(),
        }
    }

    pub(crate) fn run(&self, inputs: usize, padded_tokens: usize, elapsed: Duration) {
        self.batch_size.record(inputs as u64, &self.attrs);
        self.padded_tokens.add(padded_tokens as u64, &self.attrs);
        self.inference.record(elapsed.as_secs_f64(), &self.attrs);
    }

    pub(crate) fn queue_depth(&self, delta: i64) {
        self.queue_depth.add(delta, &self.attrs);
    }
}
