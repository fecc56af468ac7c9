//! `/api/v1/workflows`: submit, get, list, cancel and retry durable workflows through
//! `citadel.v1.WorkflowService`.

use axum::{
    Json,
    extract::{
        Path, Query,
        rejection::{PathRejection, QueryRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use citadel_proto::v1;
use tonic::Status;

use crate::{
    error::{ApiError, workflow_error},
    extract,
    mesh_client::Mesh,
    workflows::{ListQuery, SubmitBody, WorkflowList, WorkflowObject},
};

const SERVICE: &str = "workflow service";

/// `POST /api/v1/workflows`: 201 with `Location` when queued, 200 when the idempotency key
/// returned the workflow it queued before.
pub async fn submit(
    state: Mesh,
    headers: HeaderMap,
    extract::Json(body): extract::Json<SubmitBody>,
) -> Result<Response, ApiError> {
    let request = body.into_proto(&headers)?;
    let mut client = state.workflows.clone();
    let call = client.submit(state.request(request));
    let response = state.call_mapped(call, SERVICE, workflow_error).await?;
    let workflow = response.workflow.ok_or_else(|| missing("Submit"))?;
    if !response.created {
        return Ok(Json(WorkflowObject::from(workflow)).into_response());
    }
    let location = HeaderValue::try_from(format!("/api/v1/workflows/{}", workflow.id));
    let mut response = (StatusCode::CREATED, Json(WorkflowObject::from(workflow))).into_response();
    if let Ok(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /api/v1/workflows/{id}`.
pub async fn get(
    state: Mesh,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkflowObject>, ApiError> {
    let id = workflow_id(id)?;
    let mut client = state.workflows.clone();
    let call = client.get(state.request(v1::GetWorkflowRequest { id }));
    let workflow = state.call_mapped(call, SERVICE, workflow_error).await?;
    Ok(Json(WorkflowObject::from(workflow)))
}

/// `GET /api/v1/workflows?state=PENDING,STARTED&kind=noop&limit=50&page_token=...`.
pub async fn list(
    state: Mesh,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<WorkflowList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let request = query.into_proto()?;
    let mut client = state.workflows.clone();
    let call = client.list(state.request(request));
    let page = state.call_mapped(call, SERVICE, workflow_error).await?;
    Ok(Json(WorkflowList::from(page)))
}

/// `POST /api/v1/workflows/{id}/cancel`: 200 once CANCELLED, 202 while the running attempt
/// is being asked to stop; 409 once finished.
pub async fn cancel(
    state: Mesh,
    id: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<WorkflowObject>), ApiError> {
    let id = workflow_id(id)?;
    let mut client = state.workflows.clone();
    let call = client.cancel(state.request(v1::CancelWorkflowRequest { id }));
    let workflow = state.call_mapped(call, SERVICE, workflow_error).await?;
    let stopping = workflow.cancel_requested && workflow.state() != v1::WorkflowState::Cancelled;
    let status = if stopping {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(WorkflowObject::from(workflow))))
}

/// `POST /api/v1/workflows/{id}/retry`: a FAILURE or CANCELLED workflow queued again; 409
/// otherwise.
pub async fn retry(
    state: Mesh,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkflowObject>, ApiError> {
    let id = workflow_id(id)?;
    let mut client = state.workflows.clone();
    let call = client.retry(state.request(v1::RetryWorkflowRequest { id }));
    let workflow = state.call_mapped(call, SERVICE, workflow_error).await?;
    Ok(Json(WorkflowObject::from(workflow)))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    kind: Option<String>,
}

/// `GET /api/v1/workflows/queue?kind=...`: unfinished workflows by state.
pub async fn queue(
    state: Mesh,
    query: Result<Query<QueueQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let request = v1::GetQueueDepthRequest {
        kind: query.kind.unwrap_or_default(),
    };
    let mut client = state.workflows.clone();
    let call = client.get_queue_depth(state.request(request));
    let depth = state.call_mapped(call, SERVICE, workflow_error).await?;
    Ok(Json(
        serde_json::json!({"object": "workflow.queue", "pending": depth.pending,
        "started": depth.started, "retry": depth.retry}),
    ))
}

fn workflow_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|Path(id)| id)
        .map_err(|e| ApiError::invalid("id", e.body_text()))
}

/// The mesh answered without the workflow the contract promises.
fn missing(rpc: &str) -> ApiError {
    ApiError::from(Status::internal(format!(
        "the workflow service's {rpc} answer holds no workflow"
    )))
}
