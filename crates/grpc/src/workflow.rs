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

use crate::{
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

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::WorkflowEvent, Status>> + Send>>;

#[tonic::async_trait]
impl WorkflowService for WorkflowApi {
    async fn submit(
        &self,
        request: Request<SubmitWorkflowRequest>,
    ) -> Result<Response<SubmitWorkflowResponse>, Status> {
        let new = convert::new_workflow(request.into_inner(), &self.defaults)?;
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
        let workflow = self.store.get(&request.into_inner().id).await;
        Ok(Response::new(convert::workflow(
            &workflow.map_err(store_status)?,
        )))
    }

    async fn list(
        &self,
        request: Request<ListWorkflowsRequest>,
    ) -> Result<Response<ListWorkflowsResponse>, Status> {
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
        let outcome = self.store.cancel(&request.into_inner().id).await;
        let (CancelOutcome::Cancelled(w) | CancelOutcome::Requested(w)) =
            outcome.map_err(store_status)?;
        Ok(Response::new(convert::workflow(&w)))
    }

    async fn retry(
        &self,
        request: Request<RetryWorkflowRequest>,
    ) -> Result<Response<v1::Workflow>, Status> {
        let workflow = self.store.retry(&request.into_inner().id).await;
        Ok(Response::new(convert::workflow(
            &workflow.map_err(store_status)?,
        )))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<WatchWorkflowsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let stopping = self.stopping.clone();
        let stream = workflow_watch::start(&self.store, &self.hub, request, stopping).await?;
        Ok(Response::new(stream))
    }
}
