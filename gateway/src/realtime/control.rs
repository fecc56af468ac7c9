//! Workflow control over the socket: the same `WorkflowService` calls the REST routes make,
//! answered `{"type": "result", "id", "data"}` (data: the workflow, as REST returns it) or
//! `{"type": "error", "id", "error"}`.

use axum::{extract::ws::Utf8Bytes, http::HeaderMap};
use citadel_proto::v1;
use serde_json::Value;
use tokio::sync::mpsc;

use super::protocol::{self, ClientMessage};
use crate::{
    error::{ApiError, workflow_error},
    mesh_client::Mesh,
    workflows::WorkflowObject,
};

const SERVICE: &str = "workflow service";

pub(super) async fn run(mesh: Mesh, message: ClientMessage, out: mpsc::Sender<Utf8Bytes>) {
    let (id, answer) = match message {
        ClientMessage::SubmitWorkflow { id, workflow } => (id, submit(&mesh, workflow).await),
        ClientMessage::CancelWorkflow { id, workflow_id } => {
            let mut client = mesh.workflows.clone();
            let call = client.cancel(mesh.request(v1::CancelWorkflowRequest { id: workflow_id }));
            (id, answer(&mesh, call).await)
        }
        ClientMessage::RetryWorkflow { id, workflow_id } => {
            let mut client = mesh.workflows.clone();
            let call = client.retry(mesh.request(v1::RetryWorkflowRequest { id: workflow_id }));
            (id, answer(&mesh, call).await)
        }
        ClientMessage::GetWorkflow { id, workflow_id } => {
            let mut client = mesh.workflows.clone();
            let call = client.get(mesh.request(v1::GetWorkflowRequest { id: workflow_id }));
            (id, answer(&mesh, call).await)
        }
        // The session answers the others itself.
        _ => return,
    };
    let reply = match answer {
        Ok(data) => protocol::result(id.as_ref(), data),
        Err(e) => protocol::error(id.as_ref(), &e),
    };
    let _ = out.send(reply.to_string().into()).await;
}

async fn submit(mesh: &Mesh, body: crate::workflows::SubmitBody) -> Result<Value, ApiError> {
    let request = body.into_proto(&HeaderMap::new())?;
    let mut client = mesh.workflows.clone();
    let call = client.submit(mesh.request(request));
    let response = mesh.call_mapped(call, SERVICE, workflow_error).await?;
    let workflow = response.workflow.unwrap_or_default();
    let mut data = object(workflow);
    data["created"] = response.created.into();
    Ok(data)
}

async fn answer(
    mesh: &Mesh,
    call: impl Future<Output = Result<tonic::Response<v1::Workflow>, tonic::Status>>,
) -> Result<Value, ApiError> {
    let workflow = mesh.call_mapped(call, SERVICE, workflow_error).await?;
    Ok(object(workflow))
}

fn object(workflow: v1::Workflow) -> Value {
    serde_json::to_value(WorkflowObject::from(workflow)).unwrap_or(Value::Null)
}
