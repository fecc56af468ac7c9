//! `citadel.v1.WorkflowService` handlers: check the request, call the store, convert back.
//! `Watch` streams events from the process's `EventHub`.

use std::pin::Pin;

use citadel_proto::v1::{
    self, CancelWorkflowRequest, GetWorkflowRequest, ListWorkflowsRequest, ListWorkflowsResponse,
    RetryWorkflowRequest, SubmitWorkflowRequest, SubmitWorkflowResponse, WatchWorkflowsRequest,
    workflow_service_server::WorkflowService,
};
use citadel_workflows::{CancelOutcome, EventHub, ListFilter, Registry, Store};
use futures_util::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use citadel_auth::Caller;
use citadel_workflows::{StoreError, Workflow};

use crate::{
    auth::caller,
    status::{invalid, store_status},
    workflow_convert::{self as convert, SubmitDefaults},
    workflow_watch,
};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

#[derive(Clone)]
pub struct WorkflowApi {
    store: Store,
    hub: EventHub,
    /// The kinds a submit may name, and their parameter checks.
    registry: Registry,
    defaults: SubmitDefaults,
    /// Ends every Watch stream (UNAVAILABLE) when the server shuts down, so open streams do
    /// not hold the drain until its deadline.
    stopping: CancellationToken,
}

impl WorkflowApi {
    pub fn new(
        store: Store,
        hub: EventHub,
        registry: Registry,
        defaults: SubmitDefaults,
        stopping: CancellationToken,
    ) -> Self {
        WorkflowApi {
            store,
            hub,
            registry,
            defaults,
            stopping,
        }
    }
}

impl WorkflowApi {
    /// The workflow, if the caller may see it: its own, or any for an admin. Another
    /// principal's answers NOT_FOUND, exactly as a workflow that does not exist.
    async fn visible(&self, caller: &Caller, id: &str) -> Result<Workflow, Status> {
        let workflow = self.store.get(id).await.map_err(store_status)?;
        match own_only(caller) {
            Some(owner) if workflow.owner.as_deref() != Some(owner.as_str()) => {
                Err(store_status(StoreError::NotFound(id.to_string())))
            }
            _ => Ok(workflow),
        }
    }
}

/// The owner a caller's view is limited to; `None`: it sees every workflow.
fn own_only(caller: &Caller) -> Option<String> {
    match caller.principal.sees_all_workflows() {
        true => None,
        false => caller.principal.owner().map(str::to_string),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::WorkflowEvent, Status>> + Send>>;

#[tonic::async_trait]
impl WorkflowService for WorkflowApi {
    async fn submit(
        &self,
        request: Request<SubmitWorkflowRequest>,
    ) -> Result<Response<SubmitWorkflowResponse>, Status> {
        let caller = caller(&request)?;
        let mut new = convert::new_workflow(request.into_inner(), &self.defaults)?;
        new.owner = caller.principal.owner().map(str::to_string);
        let Some(task) = self.registry.get(&new.kind) else {
            let known = self.registry.kinds().join(", ");
            let asked: String = new.kind.chars().take(64).collect();
            let m = format!("unknown workflow kind {asked:?}; this server runs: {known}");
            return Err(invalid("kind", m));
        };
        task.validate(&new.params)
            .map_err(|m| invalid("params", m))?;
        let (workflow, created) = self.store.submit(&new).await.map_err(store_status)?;
        Ok(Response::new(SubmitWorkflowResponse {
            workflow: Some(convert::workflow(&workflow)),
            created,
        }))
    }

    async fn get(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<v1::Workflow>, Status> {
        let caller = caller(&request)?;
        let workflow = self.visible(&caller, &request.into_inner().id).await?;
        Ok(Response::new(convert::workflow(&workflow)))
    }

    async fn list(
        &self,
        request: Request<ListWorkflowsRequest>,
    ) -> Result<Response<ListWorkflowsResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        if r.page_size > MAX_PAGE {
            return Err(invalid("page_size", format!("must be at most {MAX_PAGE}")));
        }
        convert::plain_text("kind", &r.kind)?;
        let states = r.states.iter().map(|s| convert::from_proto_state(*s));
        let filter = ListFilter {
            states: states.collect::<Result<_, _>>()?,
            kind: Some(r.kind).filter(|k| !k.is_empty()),
            page_size: u64::from(if r.page_size == 0 {
                DEFAULT_PAGE
            } else {
                r.page_size
            }),
            max_bytes: self.defaults.list_page_max_bytes,
            page_token: Some(r.page_token).filter(|t| !t.is_empty()),
            owner: own_only(&caller),
        };
        let page = self.store.list(&filter).await.map_err(store_status)?;
        Ok(Response::new(ListWorkflowsResponse {
            workflows: page.workflows.iter().map(convert::workflow).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn cancel(
        &self,
        request: Request<CancelWorkflowRequest>,
    ) -> Result<Response<v1::Workflow>, Status> {
        let caller = caller(&request)?;
        let id = request.into_inner().id;
        self.visible(&caller, &id).await?;
        let outcome = self.store.cancel(&id).await;
        let (CancelOutcome::Cancelled(w) | CancelOutcome::Requested(w)) =
            outcome.map_err(store_status)?;
        Ok(Response::new(convert::workflow(&w)))
    }

    async fn retry(
        &self,
        request: Request<RetryWorkflowRequest>,
    ) -> Result<Response<v1::Workflow>, Status> {
        let caller = caller(&request)?;
        let id = request.into_inner().id;
        self.visible(&caller, &id).await?;
        let workflow = self.store.retry(&id).await;
        Ok(Response::new(convert::workflow(
            &workflow.map_err(store_status)?,
        )))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<WatchWorkflowsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        if !request.id.is_empty() {
            self.visible(&caller, &request.id).await?;
        }
        let stopping = self.stopping.clone();
        let owner = own_only(&caller);
        let stream =
            workflow_watch::start(&self.store, &self.hub, request, owner, stopping).await?;
        Ok(Response::new(stream))
    }
}
