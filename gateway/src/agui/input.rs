//! AG-UI's `RunAgentInput`, read tolerantly (both `@ag-ui/client` 1.0 and 0.0.59 send it;
//! unknown fields are ignored, `tools`, `context` and `state` may be missing), and its
//! messages as the contract's chat messages.

use citadel_proto::v1;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunAgentInput {
    pub thread_id: String,
    pub run_id: String,
    #[serde(default)]
    pub parent_run_id: Option<String>,
    #[serde(default)]
    pub state: Value,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub tools: Vec<Tool>,
    #[serde(default)]
    pub context: Vec<Context>,
    #[serde(default)]
    pub forwarded_props: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Value,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ToolCall {
    pub id: String,
    pub function: FunctionCall,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Tool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parameters: Value,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Context {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub value: String,
}

/// Most messages and tools one run may carry.
const MAX_MESSAGES: usize = 1_000;
const MAX_TOOLS: usize = 128;

impl RunAgentInput {
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        if self.thread_id.is_empty() || self.run_id.is_empty() {
            return Err(ApiError::invalid(
                "threadId",
                "threadId and runId are required",
            ));
        }
        if self.messages.len() > MAX_MESSAGES {
            let m = format!("at most {MAX_MESSAGES} messages");
            return Err(ApiError::invalid("messages", m));
        }
        if self.tools.len() > MAX_TOOLS {
            return Err(ApiError::invalid(
                "tools",
                format!("at most {MAX_TOOLS} tools"),
            ));
        }
        Ok(())
    }

    /// The conversation for the model: the context as a system message, then every message
    /// a chat model understands (activity and reasoning messages are the UI's own).
    pub(crate) fn chat_messages(&self) -> Vec<v1::ChatMessage> {
        let mut out = Vec::with_capacity(self.messages.len() + 1);
        if !self.context.is_empty() {
            let lines: Vec<String> = self
                .context
                .iter()
                .map(|c| format!("- {}: {}", c.description, c.value))
                .collect();
            out.push(text_message(
                "system",
                format!("Context:\n{}", lines.join("\n")),
            ));
        }
        for m in &self.messages {
            let role = match m.role.as_str() {
                "developer" => "system",
                role @ ("system" | "user" | "assistant" | "tool") => role,
                _ => continue,
            };
            let mut message = text_message(role, content_text(&m.content));
            message.name = m.name.clone();
            message.tool_call_id = m.tool_call_id.clone();
            message.tool_calls = m
                .tool_calls
                .iter()
                .map(|c| v1::ToolCall {
                    id: c.id.clone(),
                    r#type: "function".to_string(),
                    function: Some(v1::FunctionCall {
                        name: c.function.name.clone(),
                        arguments: c.function.arguments.clone(),
                    }),
                })
                .collect();
            if role == "assistant" && !message.tool_calls.is_empty() && m.content.is_null() {
                message.content = None;
            }
            out.push(message);
        }
        out
    }
}

pub(crate) fn text_message(role: &str, content: String) -> v1::ChatMessage {
    v1::ChatMessage {
        role: role.to_string(),
        content: Some(content),
        ..Default::default()
    }
}

/// A string, or the text parts of a list of content parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A tool for the model, from a name, a description and a JSON Schema.
pub(crate) fn tool(name: &str, description: &str, parameters: &Value) -> v1::Tool {
    let parameters = match parameters {
        Value::Object(_) => citadel_proto::json::to_struct(parameters),
        _ => None,
    };
    v1::Tool {
        r#type: "function".to_string(),
        function: Some(v1::FunctionDefinition {
            name: name.to_string(),
            description: Some(description.to_string()),
            parameters,
            strict: None,
        }),
    }
}
