//! The Copilot actions: one catalogue of Citadel's server-side actions (name, description,
//! JSON Schema of the arguments, permission), offered by the agent to its model and run
//! inside its loop, and reachable directly at `/api/v1/copilot/actions` for a UI that
//! triggers an action without a model. Every action is a gRPC call, so the mesh's door
//! checks the caller exactly as for the REST route of the same RPC.

use axum::Json;
use citadel_auth::Permission;
use citadel_proto::v1;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    error::{ApiError, workflow_error},
    extract,
    mesh_client::Mesh,
    openai::{EmbeddingsRequest, EmbeddingsResponse},
    workflows::{SubmitBody, WorkflowObject},
};

pub(crate) struct Action {
    pub name: &'static str,
    pub description: &'static str,
    pub permission: Permission,
    parameters: fn() -> Value,
}

impl Action {
    pub(crate) fn parameters(&self) -> Value {
        (self.parameters)()
    }
}

pub(crate) const ACTIONS: [Action; 3] = [
    Action {
        name: "generate_embedding",
        description: "Embeds one text or a list of texts with one of Citadel's embedding \
                      models and returns the vectors (OpenAI's embeddings response).",
        permission: Permission::Embeddings,
        parameters: || {
            json!({"type": "object", "properties": {
                "input": {"description": "A text or a list of texts",
                    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                "model": {"type": "string", "description": "An embedding model; default: the server's"}
            }, "required": ["input"]})
        },
    },
    Action {
        name: "execute_workflow",
        description: "Starts a durable background workflow of a kind this server runs (noop, \
                      sleep, embed_batch, cache_warm, llm_batch, llm_chain) and waits a \
                      bounded time for it, streaming its progress; returns the workflow.",
        permission: Permission::WorkflowsWrite,
        parameters: || {
            json!({"type": "object", "properties": {
                "kind": {"type": "string", "description": "The workflow kind"},
                "params": {"type": "object", "description": "The kind's parameters"}
            }, "required": ["kind"]})
        },
    },
    Action {
        name: "get_workflow",
        description: "Reads one workflow by id: its state, progress, result or error.",
        permission: Permission::WorkflowsRead,
        parameters: || {
            json!({"type": "object", "properties": {
                "id": {"type": "string", "description": "The workflow id"}
            }, "required": ["id"]})
        },
    },
];

pub(crate) fn find(name: &str) -> Option<&'static Action> {
    ACTIONS.iter().find(|a| a.name == name)
}

/// The catalogue as JSON.
fn describe(action: &Action) -> Value {
    json!({"name": action.name, "description": action.description,
        "parameters": action.parameters(), "permission": action.permission.name()})
}

/// `GET /api/v1/copilot/actions`.
pub async fn list(_mesh: Mesh) -> Json<Value> {
    let data: Vec<Value> = ACTIONS.iter().map(describe).collect();
    Json(json!({"object": "list", "data": data}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    name: String,
    #[serde(default)]
    arguments: Value,
}

/// `POST /api/v1/copilot/actions` `{"name", "arguments"}`: the action's result.
pub async fn invoke(
    mesh: Mesh,
    extract::Json(body): extract::Json<InvokeBody>,
) -> Result<Json<Value>, ApiError> {
    let settings = mesh.realtime.agui.clone();
    let result = execute(&mesh, &settings, &body.name, body.arguments, None).await?;
    Ok(Json(json!({"name": body.name, "result": result})))
}

/// Runs `name` with `arguments`. `progress` receives the workflow of `execute_workflow` at
/// each change while it is awaited.
pub(crate) async fn execute(
    mesh: &Mesh,
    settings: &super::AguiSettings,
    name: &str,
    arguments: Value,
    progress: Option<mpsc::Sender<WorkflowObject>>,
) -> Result<Value, ApiError> {
    let arguments = match arguments {
        Value::Null => json!({}),
        Value::Object(_) => arguments,
        _ => return Err(ApiError::invalid("arguments", "must be a JSON object")),
    };
    match name {
        "generate_embedding" => embed(mesh, settings, arguments).await,
        "execute_workflow" => workflow(mesh, settings, arguments, progress).await,
        "get_workflow" => {
            let id = string_arg(&arguments, "id")?;
            let mut client = mesh.workflows.clone();
            let call = client.get(mesh.request(v1::GetWorkflowRequest { id }));
            let w = mesh
                .call_mapped(call, "workflow service", workflow_error)
                .await?;
            Ok(object(w))
        }
        _ => {
            let names: Vec<&str> = ACTIONS.iter().map(|a| a.name).collect();
            let shown: String = name.chars().take(64).collect();
            let m = format!("unknown action {shown:?}; actions: {}", names.join(", "));
            Err(
                ApiError::new(axum::http::StatusCode::NOT_FOUND, crate::error::INVALID, m)
                    .with_code("unknown_action"),
            )
        }
    }
}

fn string_arg(arguments: &Value, key: &'static str) -> Result<String, ApiError> {
    match arguments.get(key).and_then(Value::as_str) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(ApiError::invalid(
            key,
            format!("arguments.{key} must be a non-empty string"),
        )),
    }
}

async fn embed(
    mesh: &Mesh,
    settings: &super::AguiSettings,
    mut arguments: Value,
) -> Result<Value, ApiError> {
    if arguments.get("model").is_none_or(Value::is_null) {
        arguments["model"] = settings.embedding_model.clone().into();
    }
    let body: EmbeddingsRequest = serde_json::from_value(arguments)
        .map_err(|e| ApiError::invalid("arguments", e.to_string()))?;
    let (request, format) = body.into_proto()?;
    let mut client = mesh.embeddings.clone();
    let response = mesh.call(client.embed(mesh.request(request))).await?;
    serde_json::to_value(EmbeddingsResponse::from_proto(response, format))
        .map_err(|e| ApiError::from(tonic::Status::internal(e.to_string())))
}

/// Submits, then follows the workflow until it finishes or `workflow_wait` passes; answers
/// with the workflow as it stands.
async fn workflow(
    mesh: &Mesh,
    settings: &super::AguiSettings,
    arguments: Value,
    progress: Option<mpsc::Sender<WorkflowObject>>,
) -> Result<Value, ApiError> {
    let body: SubmitBody = serde_json::from_value(arguments)
        .map_err(|e| ApiError::invalid("arguments", e.to_string()))?;
    let request = body.into_proto(&axum::http::HeaderMap::new())?;
    let mut client = mesh.workflows.clone();
    let call = client.submit(mesh.request(request));
    let submitted = mesh
        .call_mapped(call, "workflow service", workflow_error)
        .await?;
    let mut latest = submitted.workflow.unwrap_or_default();
    let watch = v1::WatchWorkflowsRequest {
        id: latest.id.clone(),
        records: true,
        ..Default::default()
    };
    let follow = async {
        let mut stream = client
            .watch(mesh.stream_request(watch))
            .await
            .map_err(workflow_error)?
            .into_inner();
        while let Some(event) = stream.message().await.map_err(workflow_error)? {
            if let Some(w) = event.workflow {
                if let Some(progress) = &progress {
                    let _ = progress.send(WorkflowObject::from(w.clone())).await;
                }
                latest = w;
            }
        }
        Ok::<_, ApiError>(())
    };
    match tokio::time::timeout(settings.workflow_wait, follow).await {
        Ok(followed) => followed?,
        Err(_) => tracing::debug!("execute_workflow: answering before the workflow finished"),
    }
    Ok(object(latest))
}

fn object(w: v1::Workflow) -> Value {
    serde_json::to_value(WorkflowObject::from(w)).unwrap_or(Value::Null)
}
