//! The workflow core every edge calls: submit, get, list, cancel, retry and watch, with the
//! rules that make them one API wherever they are reached from (gRPC, the WebSocket, the
//! agent): submit bounds and defaults, kind and parameter checks, page limits, who may see
//! which workflow, and Watch's snapshot, resume point and final result. Edges only translate
//! their wire format into these calls and `WorkflowError` into theirs.

mod feed;
mod submit;
mod watch;

use std::sync::Arc;
use tracing::Instrument;

use tokio::sync::OnceCell;

pub use submit::{SubmitLimits, SubmitRequest};
pub use watch::{Watch, WatchItem, WatchRequest};

use crate::{
    CancelOutcome, EventHub, ListFilter, Page, QueueDepth, Registry, State, Store, StoreError,
    Workflow,
};
use feed::RecordFeed;

/// Most workflows in one List page.
pub const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 50;
/// Longest filter value (a kind, an id) that may reach the database.
const MAX_FILTER_LEN: usize = 255;

/// Who is asking, as far as workflows care.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// The principal that owns what it submits (`None` with auth off).
    pub owner: Option<String>,
    /// Sees every principal's workflows (admins, and everyone with auth off).
    pub sees_all: bool,
}

impl Viewer {
    /// The owner this viewer's reads are limited to; `None`: every workflow.
    fn only(&self) -> Option<&str> {
        match self.sees_all {
            true => None,
            false => self.owner.as_deref(),
        }
    }

    fn may_see(&self, workflow: &Workflow) -> bool {
        self.may_see_owner(workflow.owner.as_deref())
    }

    fn may_see_owner(&self, owner: Option<&str>) -> bool {
        self.only().is_none_or(|only| owner == Some(only))
    }
}

/// Why a workflow call was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The request itself is wrong; `param` names the field.
    #[error("{param}: {message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    /// A watcher fell this many changes behind and was dropped: it should watch again (with a
    /// snapshot) to learn the current state.
    #[error("this watcher fell {missed} changes behind; watch again")]
    Lagged { missed: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WorkflowError {
    pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        WorkflowError::Invalid {
            param,
            message: message.into(),
        }
    }
}

/// `List`'s request, as an edge receives it.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub states: Vec<State>,
    pub kind: Option<String>,
    /// 0 = the default page (50).
    pub page_size: u32,
    pub page_token: Option<String>,
}

#[derive(Clone)]
pub struct Workflows {
    store: Store,
    hub: EventHub,
    registry: Registry,
    limits: SubmitLimits,
    /// Every change with its whole record, for the watchers that ask for records; started by
    /// the first of them.
    feed: Arc<OnceCell<RecordFeed>>,
    watch_buffer: usize,
}

impl Workflows {
    pub fn new(store: Store, hub: EventHub, registry: Registry, limits: SubmitLimits) -> Self {
        Workflows {
            store,
            hub,
            registry,
            limits,
            feed: Arc::new(OnceCell::new()),
            watch_buffer: feed::CAPACITY,
        }
    }

    /// How many changes a watcher with records may fall behind before it is dropped.
    pub fn with_watch_buffer(mut self, changes: usize) -> Self {
        self.watch_buffer = changes.max(1);
        self
    }

    /// Queues a workflow; `false` when the idempotency key returned the one queued before.
    pub async fn submit(
        &self,
        viewer: &Viewer,
        request: SubmitRequest,
    ) -> Result<(Workflow, bool), WorkflowError> {
        let mut new = request.into_new(&self.limits)?;
        new.owner = viewer.owner.clone();
        new.trace_context = citadel_telemetry::trace::traceparent();
        let Some(task) = self.registry.get(&new.kind) else {
            let known = self.registry.kinds().join(", ");
            let asked: String = new.kind.chars().take(64).collect();
            let m = format!("unknown workflow kind {asked:?}; this server runs: {known}");
            return Err(WorkflowError::invalid("kind", m));
        };
        task.validate(&new.params)
            .map_err(|m| WorkflowError::invalid("params", m))?;
        let span = citadel_telemetry::trace_span!("db.insert", kind = %new.kind);
        Ok(self.store.submit(&new).instrument(span).await?)
    }

    /// The workflow, if the viewer may see it: another principal's answers NOT_FOUND, exactly
    /// as one that does not exist.
    pub async fn get(&self, viewer: &Viewer, id: &str) -> Result<Workflow, WorkflowError> {
        let span = citadel_telemetry::trace_span!("db.select");
        let workflow = self.store.get(id).instrument(span).await?;
        match viewer.may_see(&workflow) {
            true => Ok(workflow),
            false => Err(StoreError::NotFound(id.to_string()).into()),
        }
    }

    /// Newest first, a page at a time.
    pub async fn list(&self, viewer: &Viewer, request: ListRequest) -> Result<Page, WorkflowError> {
        if request.page_size > MAX_PAGE {
            let m = format!("must be at most {MAX_PAGE}");
            return Err(WorkflowError::invalid("page_size", m));
        }
        if let Some(kind) = &request.kind {
            filter_value("kind", kind)?;
        }
        let filter = ListFilter {
            states: request.states,
            kind: request.kind.filter(|k| !k.is_empty()),
            page_size: u64::from(match request.page_size {
                0 => DEFAULT_PAGE,
                n => n,
            }),
            max_bytes: self.limits.list_page_max_bytes,
            page_token: request.page_token.filter(|t| !t.is_empty()),
            owner: viewer.only().map(str::to_string),
        };
        Ok(self.store.list(&filter).await?)
    }

    /// A queued workflow is cancelled at once; a running one is asked to stop.
    pub async fn cancel(&self, viewer: &Viewer, id: &str) -> Result<Workflow, WorkflowError> {
        self.get(viewer, id).await?;
        let (CancelOutcome::Cancelled(w) | CancelOutcome::Requested(w)) =
            self.store.cancel(id).await?;
        Ok(w)
    }

    /// A FAILURE or CANCELLED workflow queued again with fresh attempts.
    pub async fn retry(&self, viewer: &Viewer, id: &str) -> Result<Workflow, WorkflowError> {
        self.get(viewer, id).await?;
        let trace_context = citadel_telemetry::trace::traceparent();
        Ok(self.store.retry(id, trace_context).await?)
    }

    /// Unfinished workflows the viewer may see, by state (of one kind when given).
    pub async fn queue_depth(
        &self,
        viewer: &Viewer,
        kind: Option<&str>,
    ) -> Result<QueueDepth, WorkflowError> {
        if let Some(kind) = kind {
            filter_value("kind", kind)?;
        }
        Ok(self.store.queue_depth(kind, viewer.only()).await?)
    }

    /// Events of one workflow or of many (see `WatchRequest`), until the watch is dropped.
    pub async fn watch(
        &self,
        viewer: &Viewer,
        request: WatchRequest,
    ) -> Result<Watch, WorkflowError> {
        watch::start(self, viewer.clone(), request).await
    }

    /// The record feed, started by the first watcher that asks for records.
    async fn feed(&self) -> &RecordFeed {
        self.feed
            .get_or_init(|| async {
                RecordFeed::start(self.store.clone(), &self.hub, self.watch_buffer)
            })
            .await
    }
}

/// A filter value fit to reach the database: short, no control characters.
fn filter_value(param: &'static str, value: &str) -> Result<(), WorkflowError> {
    if value.len() > MAX_FILTER_LEN || value.chars().any(char::is_control) {
        let m = format!("must be at most {MAX_FILTER_LEN} bytes, without control characters");
        return Err(WorkflowError::invalid(param, m));
    }
    Ok(())
}
