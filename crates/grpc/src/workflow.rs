//! `citadel.v1.WorkflowService` handlers: the caller as a `Viewer`, the request into the
//! workflow core (`citadel_workflows::Workflows`), the answer back to protobuf. `Watch` ends
//! with UNAVAILABLE when the server shuts down, so open streams do not hold the drain.

use std::pin::Pin;

use citadel_auth::Caller;
use citadel_proto::v1::{
    self, CancelWorkflowRequest, GetWorkflowRequest, ListWorkflowsRequest, ListWorkflowsResponse,
    RetryWorkflowRequest, SubmitWorkflowRequest, SubmitWorkflowResponse, WatchWorkflowsRequest,
    workflow_service_server::WorkflowService,
};
use citadel_workflows::{ListRequest, Viewer, WatchRequest, Workflows};
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{auth::caller, status::workflow_status, workflow_convert as convert};

#[derive(Clone)]
pub struct WorkflowApi {
    workflows: Workflows,
    /// Ends every Watch stream when the server shuts down.
    stopping: CancellationToken,
}

impl WorkflowApi {
    pub fn new(workflows: Workflows, stopping: CancellationToken) -> Self {
        WorkflowApi {
            workflows,
            stopping,
        }
    }
}

/// The caller as the workflow core sees it.
fn viewer<T>(request: &Request<T>) -> Result<Viewer, Status> {
    let caller: Caller = caller(request)?;
    Ok(Viewer {
        owner: caller.principal.owner().map(str::to_string),
        sees_all: caller.principal.sees_all_workflows(),
    })
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::WorkflowEvent, Status>> + Send>>;

#[tonic::async_trait]
impl WorkflowService for WorkflowApi {
    async fn submit(
        &self,
        request: Request<SubmitWorkflowRequest>,
    ) -> Result<Response<SubmitWorkflowResponse>, Status> {
        let viewer = viewer(&request)?;
        let submit = convert::submit_request(request.into_inner())?;
        let (workflow, created) = self
            .workflows
            .submit(&viewer, submit)
            .await
            .map_err(workflow_status)?;
        Ok(Response::new(SubmitWorkflowResponse {
            workflow: Some(convert::workflow(&workflow)),
            created,
        }))
    }

    async fn get(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<v1::Workflow>, Status> {
        let viewer = viewer(&request)?;
        let id = request.into_inner().id;
        let workflow = self.workflows.get(&viewer, &id).await;
        Ok(Response::new(convert::workflow(
            &workflow.map_err(workflow_status)?,
        )))
    }

    async fn list(
        &self,
        request: Request<ListWorkflowsRequest>,
    ) -> Result<Response<ListWorkflowsResponse>, Status> {
        let viewer = viewer(&request)?;
        let r = request.into_inner();
        let states = r.states.iter().map(|s| convert::from_proto_state(*s));
        let list = ListRequest {
            states: states.collect::<Result<_, _>>()?,
            kind: Some(r.kind),
            page_size: r.page_size,
            page_token: Some(r.page_token),
        };
        let page = self.workflows.list(&viewer, list).await;
        let page = page.map_err(workflow_status)?;
        Ok(Response::new(ListWorkflowsResponse {
            workflows: page.workflows.iter().map(convert::workflow).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn cancel(
        &self,
        request: Request<CancelWorkflowRequest>,
    ) -> Result<Response<v1::Workflow>, Status> {
        let viewer = viewer(&request)?;
        let id = request.into_inner().id;
        let workflow = self.workflows.cancel(&viewer, &id).await;
        Ok(Response::new(convert::workflow(
            &workflow.map_err(workflow_status)?,
        )))
    }

    async fn retry(
        &self,
        request: Request<RetryWorkflowRequest>,
    ) -> Result<Response<v1::Workflow>, Status> {
        let viewer = viewer(&request)?;
        let id = request.into_inner().id;
        let workflow = self.workflows.retry(&viewer, &id).await;
        Ok(Response::new(convert::workflow(
            &workflow.map_err(workflow_status)?,
        )))
    }

    async fn get_queue_depth(
        &self,
        request: Request<v1::GetQueueDepthRequest>,
    ) -> Result<Response<v1::QueueDepth>, Status> {
        let viewer = viewer(&request)?;
        let kind = request.into_inner().kind;
        let kind = Some(kind.as_str()).filter(|k| !k.is_empty());
        let depth = self.workflows.queue_depth(&viewer, kind).await;
        let depth = depth.map_err(workflow_status)?;
        Ok(Response::new(v1::QueueDepth {
            pending: depth.pending,
            started: depth.started,
            retry: depth.retry,
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<WatchWorkflowsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let viewer = viewer(&request)?;
        let r = request.into_inner();
        let watch = WatchRequest {
            id: Some(r.id).filter(|id| !id.is_empty()),
            ids: r.ids,
            kinds: r.kinds,
            since_version: r.since_version,
            snapshot: r.snapshot,
            records: r.records,
            snapshot_only: r.snapshot && r.snapshot_only,
        };
        let watch = self.workflows.watch(&viewer, watch).await;
        let events = watch.map_err(workflow_status)?.map(|item| match item {
            Ok(item) => Ok(convert::event(&item)),
            Err(e) => Err(workflow_status(e)),
        });
        let stopping = self.stopping.clone().cancelled_owned();
        let bye = futures_util::stream::once(async {
            Err(Status::unavailable(
                "the server is shutting down; watch another one",
            ))
        });
        // Until shutdown; then one UNAVAILABLE, unless the watch had ended on its own.
        let stream = events
            .map(Some)
            .chain(futures_util::stream::once(async { None }))
            .take_until(stopping)
            .chain(bye.map(Some))
            .take_while(|item| std::future::ready(item.is_some()))
            .filter_map(std::future::ready);
        Ok(Response::new(Box::pin(stream)))
    }
}
