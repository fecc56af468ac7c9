//! The record feed: each event of the hub as the workflow's whole record at that version, for
//! every watcher of this process. A workflow's row is read when it is first seen and when it
//! finishes (for the result); the changes between are the event laid over the last record.
//! A thousand watchers cost those reads once, not a thousand times.

use std::{collections::HashMap, sync::Arc};

use futures_util::{StreamExt, stream::FuturesOrdered};
use tokio::sync::broadcast::{self, error::RecvError};

use super::WatchItem;
use crate::{EventHub, State, Store, StoreError, Workflow, WorkflowEvent};

/// Records a watcher may fall behind by before it is told it lagged (`workflows.watch_buffer`).
pub(super) const CAPACITY: usize = 16_384;
/// Workflows whose last record is remembered; cleared past it.
const REMEMBERED: usize = 65_536;

#[derive(Clone)]
pub(crate) struct RecordFeed {
    sender: broadcast::Sender<WatchItem>,
}

impl RecordFeed {
    pub(crate) fn start(store: Store, hub: &EventHub, capacity: usize) -> RecordFeed {
        let (sender, _) = broadcast::channel(capacity);
        let events = hub.subscribe();
        tokio::spawn(run(store, events, sender.clone()));
        RecordFeed { sender }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<WatchItem> {
        self.sender.subscribe()
    }
}

/// Reads in flight at once: they overlap, publication stays in event order.
const READS: usize = 32;

async fn run(
    store: Store,
    mut events: broadcast::Receiver<Arc<WorkflowEvent>>,
    sender: broadcast::Sender<WatchItem>,
) {
    // The last record published per workflow: its static fields (params, priority, times)
    // serve the next change without a read.
    let mut last: HashMap<String, Workflow> = HashMap::new();
    // Workflows with a read queued: their next changes wait for it instead of reading again.
    let mut reading: HashMap<String, usize> = HashMap::new();
    let mut queue = FuturesOrdered::new();
    loop {
        tokio::select! {
            biased;
            Some(((event, row), read)) = queue.next(), if !queue.is_empty() => {
                let event: Arc<WorkflowEvent> = event;
                if read && let Some(n) = reading.get_mut(&event.id) {
                    *n -= 1;
                    if *n == 0 {
                        reading.remove(&event.id);
                    }
                }
                let base = match row {
                    Some(Ok(record)) => Some(record),
                    // Deleted since (expired): nothing left to show.
                    Some(Err(StoreError::NotFound(_))) => None,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, id = %event.id, "cannot read a changed workflow");
                        None
                    }
                    None => last.get(&event.id).cloned(),
                };
                let Some(base) = base else { continue };
                if last.get(&event.id).is_some_and(|w| w.version >= event.version) {
                    continue; // a repeat: delivery is at least once
                }
                // The event is the truth about this change, even if the row has moved on
                // since: a watcher sees every state, not only the latest.
                let record = at_event(base, &event);
                if last.len() >= REMEMBERED {
                    last.clear();
                }
                last.insert(record.id.clone(), record.clone());
                // No receiver is fine: nobody is watching.
                let _ = sender.send(WatchItem {
                    event,
                    workflow: Some(Arc::new(record)),
                    snapshot: false,
                });
            }
            event = events.recv(), if queue.len() < READS => {
                let event = match event {
                    Ok(event) => event,
                    Err(RecvError::Lagged(missed)) => {
                        // Watchers that asked for a snapshot re-read state when they lag
                        // themselves; this feed cannot know which workflows it missed.
                        tracing::warn!(missed, "the workflow record feed fell behind the event hub");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                // A finished workflow's row holds what no event carries (the result, its
                // times); a workflow seen for the first time needs its static fields.
                let finished = State::parse(&event.state).is_some_and(State::is_finished);
                let unknown = !last.contains_key(&event.id) && !reading.contains_key(&event.id);
                let read = finished || unknown;
                if read {
                    *reading.entry(event.id.clone()).or_default() += 1;
                }
                let store = store.clone();
                queue.push_back(async move {
                    let row = match read {
                        true => Some(store.get(&event.id).await),
                        false => None,
                    };
                    ((event, row), read)
                });
            }
        }
    }
}
/// `base` as it stood at `event`'s version.
fn at_event(mut w: Workflow, e: &WorkflowEvent) -> Workflow {
    if w.version == e.version {
        return w;
    }
    let state = State::parse(&e.state);
    w.state = e.state.clone();
    w.attempts = i32::try_from(e.attempts).unwrap_or(i32::MAX);
    w.progress_done = e.done;
    w.progress_total = e.total;
    w.progress_message = e.message.clone().unwrap_or_default();
    w.error = e.error.clone();
    w.cancel_requested = e.cancel_requested;
    w.worker = e.worker.clone();
    w.updated_us = e.at_us;
    w.version = e.version;
    if state != Some(State::Success) {
        w.result = None;
    }
    match state {
        Some(s) if s.is_finished() => w.finished_us = w.finished_us.or(Some(e.at_us)),
        Some(State::Started) => {
            w.finished_us = None;
            w.started_us = w.started_us.or(Some(e.at_us));
        }
        _ => w.finished_us = None,
    }
    w
}
