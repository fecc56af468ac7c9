//! Counters, and the guard that follows one request to its end: completed, settled (an error
//! answer, a cut) or aborted because the client went away first.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use bytes::Bytes;

use super::{LlmStats, Shared};

/// `last_abort_ms` when there has been no abort.
const NONE: u64 = u64::MAX;

pub(crate) struct Counters {
    requests: AtomicU64,
    streams: AtomicU64,
    completed: AtomicU64,
    aborted: AtomicU64,
    in_flight: AtomicU64,
    last_abort_ms: AtomicU64,
    /// Kept as bytes; parsed only when someone asks for stats.
    last_request: Mutex<Option<Bytes>>,
    /// The last completion request's `traceparent` header.
    last_traceparent: Mutex<Option<String>>,
    /// In-flight requests per model, in `config.models` order (for `/metrics`).
    running: Vec<AtomicU64>,
    /// Source of response ids and tool-call ids.
    pub(crate) ids: AtomicU64,
    pub(crate) tool_calls: AtomicU64,
    /// Set by `stop`: requests it cuts off were not abandoned by their clients.
    stopped: AtomicBool,
}

impl Counters {
    pub(crate) fn new(models: usize) -> Self {
        Counters {
            requests: AtomicU64::new(0),
            streams: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            last_abort_ms: AtomicU64::new(NONE),
            last_request: Mutex::new(None),
            last_traceparent: Mutex::new(None),
            running: (0..models).map(|_| AtomicU64::new(0)).collect(),
            ids: AtomicU64::new(0),
            tool_calls: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    pub(crate) fn received(&self, body: &Bytes) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_request.lock() {
            *last = Some(body.clone());
        }
    }

    pub(crate) fn traced(&self, traceparent: Option<&str>) {
        if let Ok(mut last) = self.last_traceparent.lock() {
            *last = traceparent.map(str::to_string);
        }
    }

    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub(crate) fn streaming(&self) {
        self.streams.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn running(&self, model: usize) -> u64 {
        self.running
            .get(model)
            .map_or(0, |r| r.load(Ordering::Relaxed))
    }

    pub(crate) fn snapshot(&self) -> LlmStats {
        let last_abort = self.last_abort_ms.load(Ordering::Relaxed);
        let last_request = self
            .last_request
            .lock()
            .ok()
            .and_then(|last| last.clone())
            .map(|body| {
                serde_json::from_slice(&body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
                })
            });
        LlmStats {
            requests: self.requests.load(Ordering::Relaxed),
            streams: self.streams.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            last_abort_after_last_write_ms: (last_abort != NONE).then_some(last_abort),
            last_request,
            last_traceparent: self.last_traceparent.lock().ok().and_then(|t| t.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Still being answered; dropped in this state means the client went away.
    Open,
    Completed,
    /// Ended on purpose without a full answer: an error status, a reset, a cut.
    Settled,
}

/// Counts one request in flight until dropped, and how it ended.
pub(crate) struct Tracker {
    shared: Arc<Shared>,
    model: Option<usize>,
    outcome: Outcome,
    last_write: Instant,
}

impl Tracker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        Tracker {
            shared,
            model: None,
            outcome: Outcome::Open,
            last_write: Instant::now(),
        }
    }

    /// Counts the request against a model's `vllm:num_requests_running`.
    pub(crate) fn model(&mut self, index: usize) {
        if self.model.is_none()
            && let Some(running) = self.shared.counters.running.get(index)
        {
            running.fetch_add(1, Ordering::Relaxed);
            self.model = Some(index);
        }
    }

    /// A chunk was handed to the connection.
    pub(crate) fn wrote(&mut self) {
        self.last_write = Instant::now();
    }

    pub(crate) fn complete(&mut self) {
        self.outcome = Outcome::Completed;
    }

    pub(crate) fn settle(&mut self) {
        self.outcome = Outcome::Settled;
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let counters = &self.shared.counters;
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(running) = self.model.and_then(|m| counters.running.get(m)) {
            running.fetch_sub(1, Ordering::Relaxed);
        }
        match self.outcome {
            Outcome::Open if counters.stopped.load(Ordering::Relaxed) => {}
            Outcome::Open => {
                let ms = self.last_write.elapsed().as_millis();
                counters
                    .last_abort_ms
                    .store(u64::try_from(ms).unwrap_or(NONE - 1), Ordering::Relaxed);
                counters.aborted.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Completed => {
                counters.completed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Settled => {}
        }
    }
}
