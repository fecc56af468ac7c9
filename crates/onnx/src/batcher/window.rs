//! Forming a window: which queued inputs run next, and how they are cut into model runs.
//!
//! A window is bounded by tokens, not inputs: a newcomer waits for the rest of the current
//! window, and a window of 1,024 inputs of 256 tokens was 19 s of work on two cores, while
//! 4,096 tokens are a quarter of a second whatever the texts. Inputs are taken round-robin from the waiting
//! requests, at most a sixteenth of the window's tokens each per round, and a served request
//! goes to the back, so a huge request shares the model with the small ones behind it. The
//! window is sorted by length and cut into runs of at most `max_batch_tokens` padded tokens:
//! sorting keeps padding low, the budget bounds each run's memory and latency.

use std::{collections::VecDeque, mem};

use super::{Item, Queue, Shared};

/// One request takes at most 1/SHARES_PER_WINDOW of a window's tokens per round (one full run
/// at the defaults), so sixteen waiting requests all get into the next window.
const SHARES_PER_WINDOW: usize = 16;

pub(super) fn form_window(queue: &mut Queue, shared: &Shared) {
    let settings = shared.settings;
    let mut dropped = 0;
    queue.jobs.retain(|job| {
        let live = job.front().is_some_and(|item| !item.ticket.abandoned());
        if !live {
            dropped += job.len();
        }
        live
    });
    queue.waiting -= dropped;
    shared.metrics.queue_depth(-(dropped as i64));

    // Round-robin that carries over between windows: a served job goes to the back, so with
    // more waiting requests than fit one window, the next window starts with the ones skipped.
    let share = (settings.max_window_tokens / SHARES_PER_WINDOW).max(1);
    let mut window = Vec::new();
    let mut tokens = 0;
    while window.len() < settings.max_window_inputs && tokens < settings.max_window_tokens {
        let Some(mut job) = queue.jobs.pop_front() else {
            break;
        };
        let room = settings.max_window_tokens - tokens;
        let inputs = settings.max_window_inputs - window.len();
        let (taken, cost) = take_share(&mut job, share.min(room), inputs);
        tokens += cost;
        window.extend(taken);
        if !job.is_empty() {
            queue.jobs.push_back(job);
        }
    }
    window.sort_by_key(|item| item.ids.len());
    queue
        .runs
        .extend(split_runs(window, settings.max_batch_tokens));
}

/// Takes inputs from the front of `job` while they fit `max_tokens` (always at least one, so an
/// input as wide as the whole budget still runs) and `max_inputs`; returns them and their tokens.
fn take_share(
    job: &mut VecDeque<Item>,
    max_tokens: usize,
    max_inputs: usize,
) -> (Vec<Item>, usize) {
    let mut taken = Vec::new();
    let mut tokens = 0;
    while taken.len() < max_inputs {
        let Some(len) = job.front().map(|item| item.ids.len()) else {
            break;
        };
        if !taken.is_empty() && tokens + len > max_tokens {
            break;
        }
        tokens += len;
        taken.extend(job.pop_front());
    }
    (taken, tokens)
}

/// Cuts length-sorted inputs into runs of at most `max_tokens` padded tokens.
fn split_runs(sorted: Vec<Item>, max_tokens: usize) -> Vec<Vec<Item>> {
    let mut runs = Vec::new();
    let mut current: Vec<Item> = Vec::new();
    for item in sorted {
        // Sorted ascending, so the newest item sets the run's width.
        let width = item.ids.len();
        if !current.is_empty() && (current.len() + 1) * width > max_tokens {
            runs.push(mem::take(&mut current));
        }
        current.push(item);
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Condvar, Mutex};

    use tokio::sync::oneshot;

    use super::*;
    use crate::{
        batcher::{BatchSettings, Finished, RunError, Ticket},
        metrics::BatchMetrics,
    };

    fn item(len: usize, ticket: &Arc<Ticket>) -> Item {
        Item {
            ids: vec![1; len],
            index: 0,
            ticket: ticket.clone(),
        }
    }

    /// A ticket whose caller is still waiting (the receiver is returned to keep it so).
    fn live_ticket() -> (Arc<Ticket>, oneshot::Receiver<Result<Finished, RunError>>) {
        let (reply, rx) = oneshot::channel();
        (Arc::new(Ticket::new(0, reply)), rx)
    }

    fn ticket() -> Arc<Ticket> {
        live_ticket().0
    }

    fn shared(settings: BatchSettings) -> Shared {
        Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            settings,
            metrics: BatchMetrics::new("test"),
        }
    }

    #[test]
    fn round_robin_reaches_every_waiting_request_across_windows() {
        let shared = shared(BatchSettings {
            max_batch_tokens: 1024,
            max_window_inputs: 1024,
            max_window_tokens: 1024 * 8,
        });
        let (tickets, _waiting): (Vec<_>, Vec<_>) = (0..20).map(|_| live_ticket()).unzip();
        let mut queue = Queue::default();
        for t in &tickets {
            queue.jobs.push_back((0..900).map(|_| item(8, t)).collect());
            queue.waiting += 900;
        }
        let mut served = vec![false; tickets.len()];
        for _ in 0..2 {
            form_window(&mut queue, &shared);
            for item in queue.runs.drain(..).flatten() {
                let i = tickets
                    .iter()
                    .position(|t| Arc::ptr_eq(t, &item.ticket))
                    .unwrap();
                served[i] = true;
            }
        }
        assert!(
            served.iter().all(|s| *s),
            "some request waited more than two windows: {served:?}"
        );
    }

    #[test]
    fn a_newcomer_behind_a_bulk_of_long_texts_waits_for_one_small_window() {
        let shared = shared(BatchSettings::new(256, 2));
        let (bulk, _bulk_waiting) = live_ticket();
        let (small, _small_waiting) = live_ticket();
        let mut queue = Queue::default();
        queue
            .jobs
            .push_back((0..400).map(|_| item(256, &bulk)).collect());
        queue.waiting += 400;
        form_window(&mut queue, &shared);
        let first: usize = queue.runs.iter().flatten().map(|i| i.ids.len()).sum();
        assert!(
            first <= BatchSettings::DEFAULT_WINDOW_TOKENS,
            "the first window holds {first} tokens of the bulk request"
        );

        // The small request arrives while that window runs; it is in the very next one, first.
        queue.jobs.push_back(VecDeque::from([item(12, &small)]));
        let ahead = queue.runs.drain(..).count();
        form_window(&mut queue, &shared);
        let next = queue.runs.front().and_then(|run| run.first());
        assert!(
            next.is_some_and(|i| Arc::ptr_eq(&i.ticket, &small)),
            "the small request waited for more than the {ahead} runs of one window"
        );
    }

    #[test]
    fn runs_respect_the_padded_token_budget() {
        let t = ticket();
        let sorted: Vec<Item> = [3, 5, 5, 8, 10, 40, 100]
            .iter()
            .map(|&l| item(l, &t))
            .collect();
        let runs = split_runs(sorted, 64);
        for run in &runs {
            let width = run.iter().map(|i| i.ids.len()).max().unwrap_or(0);
            assert!(
                run.len() == 1 || run.len() * width <= 64,
                "run of {} x {width}",
                run.len()
            );
        }
        assert_eq!(runs.iter().map(Vec::len).sum::<usize>(), 7);
        // An input wider than the budget still runs, alone.
        assert_eq!(runs.last().map(Vec::len), Some(1));
    }
}
