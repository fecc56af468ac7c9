//! Watch: the hub's events (or, with `records`, the record feed) filtered for one watcher. One workflow: its current state first
//! (unless the watcher has seen it: `since_version`), each change after, the stream ends once
//! it has finished. Many: optionally the current state of the matching workflows first (the
//! snapshot a reconnecting client needs), then every change the viewer may see. With
//! `records`, each item carries the whole workflow, so the final one holds the result.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::{
    broadcast::{self, error::RecvError},
    mpsc,
};
use tokio_stream::wrappers::ReceiverStream;

use super::{ListRequest, Viewer, WorkflowError, Workflows, filter_value};
use crate::{State, Workflow, WorkflowEvent};

/// Items buffered per watcher before it counts as slow (then the feed's own buffer).
const BUFFER: usize = 1_024;
/// Most workflows a watch of many may name.
const MAX_IDS: usize = 100;
/// The snapshot: every unfinished workflow (up to a page) and this many of the newest.
const SNAPSHOT_RECENT: u32 = 50;

#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    /// One workflow; `None`: many.
    pub id: Option<String>,
    /// Many: only these workflows (at most 100); empty = all.
    pub ids: Vec<String>,
    /// Many: only these kinds; empty = all.
    pub kinds: Vec<String>,
    /// One: only changes after this version (a reconnecting watcher's last one).
    pub since_version: u64,
    /// Many: the matching workflows' current state first.
    pub snapshot: bool,
    /// Each change with the whole workflow (the final one with its result). It costs a row
    /// read per workflow when it is first seen and when it finishes, shared by every such
    /// watcher of the process; without it a watcher gets the events alone, as they arrive.
    pub records: bool,
    /// Many, with `snapshot`: end after it.
    pub snapshot_only: bool,
}

/// One change of one workflow.
#[derive(Debug, Clone)]
pub struct WatchItem {
    pub event: Arc<WorkflowEvent>,
    /// With `records`: the whole workflow at the event's version.
    pub workflow: Option<Arc<Workflow>>,
    /// Part of the opening snapshot rather than a change.
    pub snapshot: bool,
}

impl WatchItem {
    fn of(w: Workflow, records: bool, snapshot: bool) -> WatchItem {
        WatchItem {
            event: Arc::new(WorkflowEvent::of(&w)),
            workflow: records.then(|| Arc::new(w)),
            snapshot,
        }
    }
}

pub type Watch = ReceiverStream<Result<WatchItem, WorkflowError>>;

type Sender = mpsc::Sender<Result<WatchItem, WorkflowError>>;

/// Where a watcher's changes come from: the hub's events, or the record feed.
enum Source {
    Events(broadcast::Receiver<Arc<WorkflowEvent>>),
    Records(broadcast::Receiver<WatchItem>),
}

impl Source {
    async fn recv(&mut self) -> Result<WatchItem, RecvError> {
        match self {
            Source::Events(events) => events.recv().await.map(|event| WatchItem {
                event,
                workflow: None,
                snapshot: false,
            }),
            Source::Records(records) => records.recv().await,
        }
    }
}

pub(super) async fn start(
    workflows: &Workflows,
    viewer: Viewer,
    request: WatchRequest,
) -> Result<Watch, WorkflowError> {
    if request.ids.len() > MAX_IDS {
        let m = format!("must name at most {MAX_IDS} workflows");
        return Err(WorkflowError::invalid("ids", m));
    }
    for value in &request.ids {
        filter_value("ids", value)?;
    }
    for value in &request.kinds {
        filter_value("kinds", value)?;
    }
    // Subscribe before reading the current state: a change in between arrives, not vanishes.
    let source = match request.records {
        true => Source::Records(workflows.feed().await.subscribe()),
        false => Source::Events(workflows.hub.subscribe()),
    };
    // A watcher's own queue is part of how far it may fall behind.
    let (tx, rx) = mpsc::channel(BUFFER.min(workflows.watch_buffer));
    match request.id.clone() {
        Some(id) => {
            let current = workflows.get(&viewer, &id).await?;
            tokio::spawn(watch_one(
                source,
                workflows.clone(),
                viewer,
                current,
                request,
                tx,
            ));
        }
        None => {
            let opening = match request.snapshot {
                true => snapshot(workflows, &viewer, &request).await?,
                false => Vec::new(),
            };
            tokio::spawn(watch_many(source, viewer, request, opening, tx));
        }
    }
    Ok(ReceiverStream::new(rx))
}

fn matches(request: &WatchRequest, viewer: &Viewer, e: &WorkflowEvent) -> bool {
    (request.kinds.is_empty() || request.kinds.contains(&e.kind))
        && (request.ids.is_empty() || request.ids.contains(&e.id))
        && viewer.may_see_owner(e.owner.as_deref())
}

/// The matching workflows now, oldest change first: every unfinished one and the newest.
async fn snapshot(
    workflows: &Workflows,
    viewer: &Viewer,
    request: &WatchRequest,
) -> Result<Vec<Workflow>, WorkflowError> {
    let mut found: HashMap<String, Workflow> = HashMap::new();
    if !request.ids.is_empty() {
        for id in &request.ids {
            match workflows.get(viewer, id).await {
                Ok(w) => drop(found.insert(w.id.clone(), w)),
                Err(WorkflowError::Store(crate::StoreError::NotFound(_))) => {}
                Err(e) => return Err(e),
            }
        }
    } else {
        let kind = match request.kinds.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        };
        let unfinished = ListRequest {
            states: vec![State::Pending, State::Started, State::Retry],
            kind: kind.clone(),
            page_size: super::MAX_PAGE,
            page_token: None,
        };
        let recent = ListRequest {
            kind,
            page_size: SNAPSHOT_RECENT,
            ..ListRequest::default()
        };
        for list in [unfinished, recent] {
            for w in workflows.list(viewer, list).await?.workflows {
                found.insert(w.id.clone(), w);
            }
        }
    }
    let mut opening: Vec<Workflow> = found
        .into_values()
        .filter(|w| matches(request, viewer, &WorkflowEvent::of(w)))
        .collect();
    opening.sort_by_key(|w| w.updated_us);
    Ok(opening)
}

async fn watch_many(
    mut source: Source,
    viewer: Viewer,
    request: WatchRequest,
    opening: Vec<Workflow>,
    tx: Sender,
) {
    // What the snapshot showed: older or equal changes from the source are repeats.
    let mut shown: HashMap<String, i64> = HashMap::with_capacity(opening.len());
    for w in opening {
        shown.insert(w.id.clone(), w.version);
        if tx
            .send(Ok(WatchItem::of(w, request.records, true)))
            .await
            .is_err()
        {
            return;
        }
    }
    if request.snapshot_only {
        return;
    }
    loop {
        let change = tokio::select! {
            () = tx.closed() => return,
            change = source.recv() => change,
        };
        let sent = match change {
            Ok(item) if matches(&request, &viewer, &item.event) => {
                if shown
                    .get(&item.event.id)
                    .is_some_and(|&v| v >= item.event.version)
                {
                    continue;
                }
                shown.remove(&item.event.id);
                tx.send(Ok(item)).await
            }
            Ok(_) => Ok(()),
            Err(RecvError::Lagged(missed)) => {
                let _ = tx.send(Err(WorkflowError::Lagged { missed })).await;
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
    mut source: Source,
    workflows: Workflows,
    viewer: Viewer,
    current: Workflow,
    request: WatchRequest,
    tx: Sender,
) {
    let id = current.id.clone();
    let mut version = i64::try_from(request.since_version).unwrap_or(i64::MAX);
    let mut next = Some(WatchItem::of(current, request.records, false));
    loop {
        if let Some(item) = next.take() {
            let finished = State::parse(&item.event.state).is_some_and(State::is_finished);
            if item.event.version > version {
                version = item.event.version;
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
            if finished {
                return;
            }
        }
        let change = tokio::select! {
            () = tx.closed() => return,
            change = source.recv() => change,
        };
        next = match change {
            Ok(item) if item.event.id == id => Some(item),
            Ok(_) => None,
            // Fell behind: the row itself says where the workflow is now.
            Err(RecvError::Lagged(_)) => match workflows.get(&viewer, &id).await {
                Ok(w) => Some(WatchItem::of(w, request.records, false)),
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            },
            Err(RecvError::Closed) => return,
        };
    }
}
