//! One agent run: model turns streamed into AG-UI events, Citadel's actions run between them,
//! until the model answers without a tool call, leaves a call to the client, or the run
//! reaches `agui.max_iterations`.

use std::{collections::HashSet, convert::Infallible};

use axum::response::sse::Event;
use citadel_proto::v1;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    actions,
    events::{Emitter, Gone},
    input::{self, RunAgentInput},
};
use crate::{error::ApiError, mesh_client::Mesh};

/// Why a run ends with `RUN_ERROR`: a message and a code.
struct Failure(String, String);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let code = e.code.unwrap_or(e.kind).to_string();
        Failure(e.message, code)
    }
}

/// A tool call the model made.
#[derive(Default)]
struct Call {
    id: String,
    name: String,
    arguments: String,
    started: bool,
}

pub(super) async fn agent(
    mesh: Mesh,
    input: RunAgentInput,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    let mut out = Emitter::new(tx);
    // Gone: the client left; there is nobody to tell.
    let _ = drive(&mesh, &input, &mut out).await;
}

async fn drive(mesh: &Mesh, input: &RunAgentInput, out: &mut Emitter) -> Result<(), Gone> {
    let started = json!({"threadId": input.thread_id, "runId": input.run_id,
        "parentRunId": input.parent_run_id});
    out.emit("RUN_STARTED", started).await?;
    let stopping = mesh.realtime.streams.stopping.clone();
    let ended = tokio::select! {
        ended = turns(mesh, input, out) => Some(ended?),
        () = stopping.cancelled() => None,
    };
    match ended {
        // Tool calls left to the client are not named in an `outcome`: @ag-ui/client 0.0.59
        // (CopilotKit's) refuses `outcome.pendingToolCallIds`; both read them from the calls.
        Some(Ok(_pending)) => {
            let finished = json!({"threadId": input.thread_id, "runId": input.run_id});
            out.emit("RUN_FINISHED", finished).await
        }
        Some(Err(Failure(message, code))) => out.fail(&message, &code).await,
        None => {
            out.fail("the server is shutting down; run again", "shutting_down")
                .await
        }
    }
}

/// The loop. Ok: the ids of tool calls left to the client (none when the model answered).
async fn turns(
    mesh: &Mesh,
    input: &RunAgentInput,
    out: &mut Emitter,
) -> Result<Result<Vec<String>, Failure>, Gone> {
    let settings = mesh.realtime.agui.clone();
    let model = match model(mesh, input, &settings).await {
        Ok(model) => model,
        Err(f) => return Ok(Err(f)),
    };
    let client_tools: HashSet<&str> = input.tools.iter().map(|t| t.name.as_str()).collect();
    // Citadel's actions, unless the client brought a tool of the same name, then the client's.
    let mut tools: Vec<v1::Tool> = actions::ACTIONS
        .iter()
        .filter(|a| !client_tools.contains(a.name))
        .map(|a| input::tool(a.name, a.description, &a.parameters()))
        .collect();
    tools.extend(
        input
            .tools
            .iter()
            .map(|t| input::tool(&t.name, &t.description, &t.parameters)),
    );
    let mut messages = input.chat_messages();
    let mut state = SharedState::new(&input.state);
    for _ in 0..settings.max_iterations {
        let calls = match turn(mesh, &model, &messages, &tools, out).await? {
            Ok((assistant, calls)) => {
                messages.push(assistant);
                calls
            }
            Err(f) => return Ok(Err(f)),
        };
        if calls.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let (client, server): (Vec<Call>, Vec<Call>) = calls.into_iter().partition(|c| {
            client_tools.contains(c.name.as_str()) || actions::find(&c.name).is_none()
        });
        for call in server {
            let content = act(mesh, &settings, &call, out, &mut state).await?;
            let result = json!({"messageId": uuid::Uuid::new_v4().to_string(),
                "toolCallId": call.id, "content": content, "role": "tool"});
            out.emit("TOOL_CALL_RESULT", result).await?;
            let mut message = input::text_message("tool", content);
            message.tool_call_id = Some(call.id);
            messages.push(message);
        }
        if !client.is_empty() {
            return Ok(Ok(client.into_iter().map(|c| c.id).collect()));
        }
    }
    let m = format!(
        "the run stopped after {} model calls (agui.max_iterations)",
        settings.max_iterations
    );
    Ok(Err(Failure(m, "max_iterations".to_string())))
}

/// `forwardedProps.model`, else `agui.default_model`, else the first LLM model served.
async fn model(
    mesh: &Mesh,
    input: &RunAgentInput,
    settings: &super::AguiSettings,
) -> Result<String, Failure> {
    if let Some(model) = input.forwarded_props.get("model").and_then(Value::as_str) {
        return Ok(model.to_string());
    }
    if !settings.default_model.is_empty() {
        return Ok(settings.default_model.clone());
    }
    let mut client = mesh.completions.clone();
    let listed = mesh
        .call(client.list_models(mesh.request(v1::ListLlmModelsRequest {})))
        .await?;
    listed
        .models
        .into_iter()
        .map(|m| m.id)
        .next()
        .ok_or_else(|| {
            let m = "no LLM model is served: configure [[llm.servers]] or agui.default_model";
            Failure(m.to_string(), "model_not_found".to_string())
        })
}

/// One model call, streamed: text as TEXT_MESSAGE_*, tool calls as TOOL_CALL_*.
async fn turn(
    mesh: &Mesh,
    model: &str,
    messages: &[v1::ChatMessage],
    tools: &[v1::Tool],
    out: &mut Emitter,
) -> Result<Result<(v1::ChatMessage, Vec<Call>), Failure>, Gone> {
    let request = v1::ChatRequest {
        model: model.to_string(),
        messages: messages.to_vec(),
        tools: tools.to_vec(),
        tool_choice: Some(prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("auto".to_string())),
        }),
        ..Default::default()
    };
    let mut client = mesh.completions.clone();
    let mut stream = match mesh
        .call_llm(client.chat_stream(mesh.llm_request(request)))
        .await
    {
        Ok(stream) => stream,
        Err(e) => return Ok(Err(e.into())),
    };
    let message_id = uuid::Uuid::new_v4().to_string();
    let mut text = String::new();
    let mut calls: Vec<Call> = Vec::new();
    loop {
        let chunk = match stream.message().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(status) => return Ok(Err(ApiError::from(status).into())),
        };
        let Some(delta) = chunk
            .choices
            .into_iter()
            .find(|c| c.index == 0)
            .and_then(|c| c.delta)
        else {
            continue;
        };
        if let Some(content) = delta.content.filter(|c| !c.is_empty()) {
            out.text(&message_id, &content).await?;
            text.push_str(&content);
        }
        for d in delta.tool_calls {
            let slot = usize::try_from(d.index).unwrap_or(usize::MAX).min(64);
            if calls.len() <= slot {
                calls.resize_with(slot + 1, Call::default);
            }
            let call = &mut calls[slot];
            if let Some(id) = d.id.filter(|id| !id.is_empty()) {
                call.id = id;
            }
            if let Some(name) = d.name.filter(|n| !n.is_empty()) {
                call.name = name;
            }
            let fragment = d.arguments.unwrap_or_default();
            if !call.started && !call.name.is_empty() {
                if call.id.is_empty() {
                    call.id = format!("call_{}", uuid::Uuid::new_v4().simple());
                }
                out.tool_start(&call.id, &call.name, &message_id).await?;
                call.started = true;
                // Arguments that came before the name.
                let early = call.arguments.clone();
                out.tool_args(&call.id, &early).await?;
            }
            if call.started {
                out.tool_args(&call.id, &fragment).await?;
            }
            call.arguments.push_str(&fragment);
        }
    }
    out.close_open().await?;
    let calls: Vec<Call> = calls.into_iter().filter(|c| c.started).collect();
    let assistant = v1::ChatMessage {
        role: "assistant".to_string(),
        content: (!text.is_empty() || calls.is_empty()).then_some(text),
        tool_calls: calls
            .iter()
            .map(|c| v1::ToolCall {
                id: c.id.clone(),
                r#type: "function".to_string(),
                function: Some(v1::FunctionCall {
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                }),
            })
            .collect(),
        ..Default::default()
    };
    Ok(Ok((assistant, calls)))
}

/// Runs one of Citadel's actions; its result (or error) as the JSON text the model reads.
async fn act(
    mesh: &Mesh,
    settings: &super::AguiSettings,
    call: &Call,
    out: &mut Emitter,
    state: &mut SharedState,
) -> Result<String, Gone> {
    let arguments = match serde_json::from_str::<Value>(&call.arguments) {
        Ok(arguments) => arguments,
        Err(e) => {
            let e = ApiError::invalid("arguments", format!("not JSON: {e}"));
            return Ok(e.body().to_string());
        }
    };
    let (progress, mut changes) = mpsc::channel(16);
    let action = actions::execute(mesh, settings, &call.name, arguments, Some(progress));
    tokio::pin!(action);
    let result = loop {
        tokio::select! {
            result = &mut action => break result,
            Some(w) = changes.recv() => state.workflow(&w, out).await?,
        }
    };
    while let Ok(w) = changes.try_recv() {
        state.workflow(&w, out).await?;
    }
    Ok(match result {
        Ok(value) => value.to_string(),
        Err(e) => e.body().to_string(),
    })
}

/// The run's shared state: the client's, plus `workflows["<id>"] = {kind, state, progress}`
/// for the workflows its actions started, sent as one STATE_SNAPSHOT, then JSON Patches.
struct SharedState {
    state: Value,
    sent: bool,
}

impl SharedState {
    fn new(client: &Value) -> Self {
        let state = match client {
            Value::Object(_) => client.clone(),
            _ => json!({}),
        };
        SharedState { state, sent: false }
    }

    async fn workflow(
        &mut self,
        w: &crate::workflows::WorkflowObject,
        out: &mut Emitter,
    ) -> Result<(), Gone> {
        let mut progress = json!({"done": w.progress.done, "total": w.progress.total});
        if let Some(message) = &w.progress.message {
            progress["message"] = message.clone().into();
        }
        let entry = json!({"kind": w.kind, "state": w.state, "progress": progress});
        if !self.state.get("workflows").is_some_and(Value::is_object) {
            self.state["workflows"] = json!({});
        }
        let known = self.state["workflows"].get(&w.id).is_some();
        self.state["workflows"][&w.id] = entry.clone();
        if !self.sent {
            self.sent = true;
            return out
                .emit("STATE_SNAPSHOT", json!({"snapshot": self.state}))
                .await;
        }
        let path = format!("/workflows/{}", w.id.replace('~', "~0").replace('/', "~1"));
        let op = if known { "replace" } else { "add" };
        let delta = json!([{"op": op, "path": path, "value": entry}]);
        out.emit("STATE_DELTA", json!({"delta": delta})).await
    }
}
