//! `/ws/orchestration`'s messages: JSON text frames, one object each, told apart by `type`.
//! What a client may send is typed here; what the server sends is built where it happens.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{error::ApiError, workflows::SubmitBody};

/// The topics a client may subscribe to.
pub(crate) const TOPICS: [&str; 4] = ["workflows", "health", "models", "metrics"];

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ClientMessage {
    Subscribe {
        id: Option<Value>,
        topics: Vec<String>,
        /// `workflows`: only these workflows.
        #[serde(default)]
        workflow_ids: Vec<String>,
        /// `workflows`: only these kinds.
        #[serde(default)]
        kinds: Vec<String>,
    },
    Unsubscribe {
        id: Option<Value>,
        topics: Vec<String>,
    },
    SubmitWorkflow {
        id: Option<Value>,
        workflow: SubmitBody,
    },
    CancelWorkflow {
        id: Option<Value>,
        workflow_id: String,
    },
    RetryWorkflow {
        id: Option<Value>,
        workflow_id: String,
    },
    GetWorkflow {
        id: Option<Value>,
        workflow_id: String,
    },
    /// A fresh credential for this socket, before the one it opened with expires.
    Auth {
        id: Option<Value>,
        token: String,
    },
    Ping {
        id: Option<Value>,
    },
}

impl ClientMessage {
    /// The id its reply carries back.
    pub(crate) fn id(&self) -> Option<&Value> {
        match self {
            ClientMessage::Subscribe { id, .. }
            | ClientMessage::Unsubscribe { id, .. }
            | ClientMessage::SubmitWorkflow { id, .. }
            | ClientMessage::CancelWorkflow { id, .. }
            | ClientMessage::RetryWorkflow { id, .. }
            | ClientMessage::GetWorkflow { id, .. }
            | ClientMessage::Auth { id, .. }
            | ClientMessage::Ping { id } => id.as_ref(),
        }
    }
}

/// A frame's `id`, when it had one a reply can carry back (a string or a number).
pub(crate) fn frame_id(frame: &Value) -> Option<Value> {
    frame
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
        .cloned()
}

/// Reads one client frame; the error is the reply (`invalid_json`, `unknown_message_type`,
/// `invalid_message`).
pub(crate) fn parse(text: &str) -> Result<ClientMessage, Value> {
    let frame: Value = serde_json::from_str(text).map_err(|e| {
        error(
            None,
            &ApiError::invalid("message", format!("not JSON: {e}")).with_code("invalid_json"),
        )
    })?;
    let id = frame_id(&frame);
    let kind = frame
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let known = [
        "subscribe",
        "unsubscribe",
        "submit_workflow",
        "cancel_workflow",
        "retry_workflow",
        "get_workflow",
        "auth",
        "ping",
    ];
    if !known.contains(&kind.as_str()) {
        let shown: String = kind.chars().take(64).collect();
        let m = format!(
            "unknown message type {shown:?}; this server takes: {}",
            known.join(", ")
        );
        let e = ApiError::invalid("type", m).with_code("unknown_message_type");
        return Err(error(id.as_ref(), &e));
    }
    serde_json::from_value(frame).map_err(|e| {
        let e = ApiError::invalid("message", format!("a {kind} message: {e}"))
            .with_code("invalid_message");
        error(id.as_ref(), &e)
    })
}

/// `{"type": "error", "id"?, "error": {message, type, code, param}}`: OpenAI's error fields.
pub(crate) fn error(id: Option<&Value>, e: &ApiError) -> Value {
    let mut reply = json!({"type": "error", "error": e.body()["error"].clone()});
    if let Some(id) = id {
        reply["id"] = id.clone();
    }
    reply
}

/// `{"type": "result", "id"?, "data"}`.
pub(crate) fn result(id: Option<&Value>, data: Value) -> Value {
    let mut reply = json!({"type": "result", "data": data});
    if let Some(id) = id {
        reply["id"] = id.clone();
    }
    reply
}

/// A reply of `kind` (`ack`, `pong`) carrying the frame's id.
pub(crate) fn reply(kind: &str, id: Option<&Value>) -> Value {
    let mut reply = json!({"type": kind});
    if let Some(id) = id {
        reply["id"] = id.clone();
    }
    reply
}
