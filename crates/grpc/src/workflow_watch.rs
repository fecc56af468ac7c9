//! `Watch`: the hub's events for one workflow (its current state first, the stream ends once it
//! finishes) or for all (optionally some kinds), pushed through a bounded channel by a task that
//! stops as soon as the client goes away.

use std::{pin::Pin, sync::Arc};

use citadel_proto::v1::{self, WatchWorkflowsRequest};
use citadel_workflows::{EventHub, State, Store, WorkflowEvent};
use futures_util::Stream;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{status::store_status, workflow_convert as convert};

/// Events buffered per watcher before the watcher counts as slow (then the hub's own buffer).
const BUFFER: usize = 1_024;

type Events = Pin<Box<dyn Stream<Item = Result<v1::WorkflowEvent, Status>> + Send>>;

pub(crate) async fn start(
    store: &Store,
    hub: &EventHub,
    request: WatchWorkflowsRequest,
    owner: Option<String>,
    stopping: CancellationToken,
) -> Result<Events, Status> {
    // Subscribe before reading the current state: a change in between arrives, not vanishes.
    let events = hub.subscribe();
    let (tx, rx) = mpsc::channel(BUFFER);
    let mut watch = if request.id.is_empty() {
        tokio::spawn(watch_all(events, request.kinds, owner, tx.clone()))
    } else {
        let current = store.get(&request.id).await.map_err(store_status)?;
        let first = WorkflowEvent::of(&current);
        tokio::spawn(watch_one(events, store.clone(), first, tx.clone()))
    };
    // Ends the stream at shutdown; otherwise lets go of its sender once the watch is over,
    // so the stream ends with it.
    tokio::spawn(async move {
        tokio::select! {
            _ = &mut watch => {}
            () = stopping.cancelled() => {
                watch.abort();
                let bye = Status::unavailable("the server is shutting down; watch another one");
                let _ = tx.send(Err(bye)).await;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

type Sender = mpsc::Sender<Result<v1::WorkflowEvent, Status>>;

async fn watch_all(
    mut events: tokio::sync::broadcast::Receiver<Arc<WorkflowEvent>>,
    kinds: Vec<String>,
    owner: Option<String>,
    tx: Sender,
) {
    let mine = |e: &WorkflowEvent| owner.is_none() || e.owner == owner;
    loop {
        let event = tokio::select! {
            () = tx.closed() => return,
            event = events.recv() => event,
        };
        let sent = match event {
            Ok(e) if (kinds.is_empty() || kinds.contains(&e.kind)) && mine(&e) => {
                tx.send(Ok(convert::event(&e))).await
            }
            Ok(_) => Ok(()),
            Err(RecvError::Lagged(missed)) => {
                let m = format!("this watcher fell {missed} events behind; call Watch again");
                let _ = tx.send(Err(Status::aborted(m))).await;
                return;
            }
            Err(RecvError::Closed) => return,
        };
        if sent.is_err() {
            return;
        }
    }
}

async fn watch_one(
    mut events: tokio::sync::broadcast::Receiver<Arc<WorkflowEvent>>,
    store: Store,
    first: WorkflowEvent,
    tx: Sender,
) {
    let id = first.id.clone();
    let mut version = first.version;
    let mut finished = is_finished(&first);
    if tx.send(Ok(convert::event(&first))).await.is_err() {
        return;
    }
    while !finished {
        let event = tokio::select! {
            () = tx.closed() => return,
            event = events.recv() => event,
        };
        let event = match event {
            Ok(e) if e.id == id && e.version > version => (*e).clone(),
            Ok(_) => continue,
            // Fell behind: the row itself says where the workflow is now.
            Err(RecvError::Lagged(_)) => match store.get(&id).await {
                Ok(w) if w.version > version => WorkflowEvent::of(&w),
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Err(store_status(e))).await;
                    return;
                }
            },
            Err(RecvError::Closed) => return,
        };
        version = event.version;
        finished = is_finished(&event);
        if tx.send(Ok(convert::event(&event))).await.is_err() {
            return;
        }
    }
}

fn is_finished(e: &WorkflowEvent) -> bool {
    State::parse(&e.state).is_some_and(State::is_finished)
}
