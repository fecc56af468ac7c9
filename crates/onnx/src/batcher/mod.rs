//! The dynamic batcher: one cloneable handle in front of the model's worker threads.
//!
//! Requests are queued whole. When a worker is free and no prepared run is waiting, it forms a
//! window of at most `max_window_tokens` from the queue, taking inputs round-robin from the
//! waiting requests (so a request of 2,048 inputs shares the model with the small ones behind
//! it, and a newcomer waits for one small window, not for the whole bulk), sorts the window by
//! length and cuts it into runs of at most `max_batch_tokens` padded tokens. Sorting keeps
//! padding low; the token budgets bound each run's and each wait's length. Each worker thread owns one ONNX session,
//! so runs proceed in parallel and never on the async runtime. Results go straight back to the
//! waiting request, whose future is the only thing a slow client can hold up.

use std::{
    collections::VecDeque,
    mem,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use crate::{metrics::BatchMetrics, session::ModelSession};

mod window;

use window::form_window;

#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSettings {
    /// Most padded tokens (rows x longest row) in one model run.
    pub max_batch_tokens: usize,
    /// Most inputs sorted together into runs at once (bounds the sort).
    pub max_window_inputs: usize,
    /// Most tokens (unpadded) sorted together into runs at once: how much queued work a
    /// newcomer can find ahead of it, whatever the length of the texts.
    pub max_window_tokens: usize,
}

impl BatchSettings {
    /// Tokens per window unless the runs themselves are larger: 4,096 tokens are ~0.25 s of
    /// all-minilm on two sessions (BENCHMARKS.md, fairness), yet ~90 average sentences to sort
    /// together, about what 4 concurrent requests of 32 bring.
    pub(crate) const DEFAULT_WINDOW_TOKENS: usize = 4096;

    /// The defaults for `sessions` sessions running runs of `max_batch_tokens`: a window always
    /// holds at least one full run per session, so none idles while another works.
    pub(crate) fn new(max_batch_tokens: usize, sessions: usize) -> BatchSettings {
        BatchSettings {
            max_batch_tokens,
            max_window_inputs: 1024,
            max_window_tokens: Self::DEFAULT_WINDOW_TOKENS
                .max(max_batch_tokens.saturating_mul(sessions)),
        }
    }
}

/// What a request gets back once all its inputs have been through the model.
pub(crate) struct Finished {
    pub vectors: Vec<Vec<f32>>,
    pub queue: Duration,
    pub inference: Duration,
}

/// Why a request got no vectors.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The batcher was closed before the request was queued.
    ShuttingDown,
    /// ONNX Runtime failed the run.
    Failed(String),
}

type Reply = oneshot::Sender<Result<Finished, RunError>>;

/// One request's share of the shared state: where its vectors land.
pub(super) struct Ticket {
    vectors: Mutex<Vec<Vec<f32>>>,
    remaining: AtomicUsize,
    enqueued: Instant,
    first_run: OnceLock<Instant>,
    longest_run_us: AtomicU64,
    reply: Mutex<Option<Reply>>,
}

impl Ticket {
    fn new(inputs: usize, reply: Reply) -> Ticket {
        Ticket {
            vectors: Mutex::new(vec![Vec::new(); inputs]),
            remaining: AtomicUsize::new(inputs),
            enqueued: Instant::now(),
            first_run: OnceLock::new(),
            longest_run_us: AtomicU64::new(0),
            reply: Mutex::new(Some(reply)),
        }
    }

    /// The caller stopped waiting (deadline, disconnect) or the request already failed.
    fn abandoned(&self) -> bool {
        lock(&self.reply)
            .as_ref()
            .is_none_or(oneshot::Sender::is_closed)
    }

    fn fail(&self, error: RunError) {
        if let Some(reply) = lock(&self.reply).take() {
            let _ = reply.send(Err(error));
        }
    }

    fn deliver(&self, index: usize, vector: Vec<f32>) {
        lock(&self.vectors)[index] = vector;
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if let Some(reply) = lock(&self.reply).take() {
            let vectors = mem::take(&mut *lock(&self.vectors));
            let queue = self
                .first_run
                .get()
                .map_or(Duration::ZERO, |t| t.duration_since(self.enqueued));
            let inference = Duration::from_micros(self.longest_run_us.load(Ordering::Relaxed));
            let _ = reply.send(Ok(Finished {
                vectors,
                queue,
                inference,
            }));
        }
    }
}

struct Item {
    ids: Vec<i64>,
    index: usize,
    ticket: Arc<Ticket>,
}

#[derive(Default)]
struct Queue {
    /// Requests not yet fully taken into a window, oldest first.
    jobs: VecDeque<VecDeque<Item>>,
    /// Runs prepared from the last window, shortest inputs first.
    runs: VecDeque<Vec<Item>>,
    /// Inputs queued but not yet running (for the queue-depth gauge).
    waiting: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    settings: BatchSettings,
    metrics: BatchMetrics,
}

/// Cloneable handle to a model's queue and workers.
#[derive(Clone)]
pub(crate) struct Batcher {
    shared: Arc<Shared>,
}

impl Batcher {
    /// Starts one worker thread per session; fails if none could start (the model would
    /// otherwise look ready and never answer).
    pub(crate) fn start(
        sessions: Vec<ModelSession>,
        settings: BatchSettings,
        model: &str,
    ) -> std::io::Result<Batcher> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            settings,
            metrics: BatchMetrics::new(model),
        });
        let mut started = 0;
        let mut last_error = None;
        for (i, session) in sessions.into_iter().enumerate() {
            let shared = shared.clone();
            let spawned = thread::Builder::new()
                .name(format!("citadel-onnx-{i}"))
                .spawn(move || work(&shared, session));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => {
                    tracing::error!(error = %e, "could not start a model worker thread");
                    last_error = Some(e);
                }
            }
        }
        match (started, last_error) {
            (0, Some(e)) => Err(e),
            (0, None) => Err(std::io::Error::other("no sessions to run the model on")),
            _ => Ok(Batcher { shared }),
        }
    }

    /// Queues one request's token ids; the receiver yields its vectors in input order.
    pub(crate) fn submit(
        &self,
        inputs: Vec<Vec<i64>>,
    ) -> oneshot::Receiver<Result<Finished, RunError>> {
        let (reply, rx) = oneshot::channel();
        let n = inputs.len();
        let ticket = Arc::new(Ticket::new(n, reply));
        let items = inputs
            .into_iter()
            .enumerate()
            .map(|(index, ids)| Item {
                ids,
                index,
                ticket: ticket.clone(),
            })
            .collect();
        let mut queue = lock(&self.shared.queue);
        if queue.closed {
            drop(queue);
            ticket.fail(RunError::ShuttingDown);
            return rx;
        }
        queue.jobs.push_back(items);
        queue.waiting += n;
        self.shared.metrics.queue_depth(n as i64);
        drop(queue);
        self.shared.wake.notify_one();
        rx
    }

    /// Workers finish what is queued, then exit.
    pub(crate) fn close(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
    }
}

fn work(shared: &Shared, mut session: ModelSession) {
    while let Some(run) = next_run(shared) {
        let run: Vec<Item> = run
            .into_iter()
            .filter(|item| !item.ticket.abandoned())
            .collect();
        if run.is_empty() {
            continue;
        }
        let started = Instant::now();
        run.iter().for_each(|item| {
            item.ticket.first_run.get_or_init(|| started);
        });
        let batch: Vec<&[i64]> = run.iter().map(|item| item.ids.as_slice()).collect();
        let width = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let result = session.run(&batch);
        let elapsed = started.elapsed();
        shared.metrics.run(run.len(), run.len() * width, elapsed);
        match result {
            Ok(vectors) => {
                let micros = elapsed.as_micros() as u64;
                for (item, vector) in run.into_iter().zip(vectors) {
                    item.ticket
                        .longest_run_us
                        .fetch_max(micros, Ordering::Relaxed);
                    item.ticket.deliver(item.index, vector);
                }
            }
            Err(message) => {
                tracing::error!(error = %message, inputs = run.len(), "model run failed");
                run.iter()
                    .for_each(|item| item.ticket.fail(RunError::Failed(message.clone())));
            }
        }
    }
}

/// Blocks until a run is ready, forming a new window when the prepared runs are used up.
/// Returns `None` once the batcher is closed and drained.
fn next_run(shared: &Shared) -> Option<Vec<Item>> {
    let mut queue = lock(&shared.queue);
    loop {
        if let Some(run) = queue.runs.pop_front() {
            queue.waiting -= run.len();
            shared.metrics.queue_depth(-(run.len() as i64));
            if !queue.runs.is_empty() || !queue.jobs.is_empty() {
                shared.wake.notify_one();
            }
            return Some(run);
        }
        if !queue.jobs.is_empty() {
            form_window(&mut queue, shared);
            continue;
        }
        if queue.closed {
            return None;
        }
        queue = shared
            .wake
            .wait(queue)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
