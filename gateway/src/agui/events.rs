//! AG-UI events as the clients check them: `type` in SCREAMING_SNAKE, an integer millisecond
//! `timestamp`, optional fields left out (never `null`), nothing outside the protocol's event
//! set. The emitter also keeps what is open, so a run that ends early closes its messages and
//! tool calls before `RUN_ERROR`/`RUN_FINISHED` (the clients refuse to finish with them open).

use std::{convert::Infallible, time::SystemTime};

use axum::response::sse::Event;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Gone: the client disconnected (the run stops).
#[derive(Debug)]
pub(crate) struct Gone;

pub(crate) struct Emitter {
    tx: mpsc::Sender<Result<Event, Infallible>>,
    open_text: Option<String>,
    open_calls: Vec<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Drops every `null` member, recursively: the clients refuse `null` in optional fields.
fn without_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(without_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(without_nulls),
        _ => {}
    }
}

impl Emitter {
    pub(crate) fn new(tx: mpsc::Sender<Result<Event, Infallible>>) -> Self {
        Emitter {
            tx,
            open_text: None,
            open_calls: Vec::new(),
        }
    }

    /// One event of `kind` with `fields`.
    pub(crate) async fn emit(&mut self, kind: &str, fields: Value) -> Result<(), Gone> {
        let mut event = json!({"type": kind, "timestamp": now_ms()});
        if let (Some(event), Value::Object(fields)) = (event.as_object_mut(), fields) {
            event.extend(fields);
        }
        without_nulls(&mut event);
        let frame = Event::default().data(event.to_string());
        self.tx.send(Ok(frame)).await.map_err(|_| Gone)
    }

    /// A text delta, opening the assistant message `id` first if it is not open yet.
    pub(crate) async fn text(&mut self, id: &str, delta: &str) -> Result<(), Gone> {
        if self.open_text.is_none() {
            let start = json!({"messageId": id, "role": "assistant"});
            self.emit("TEXT_MESSAGE_START", start).await?;
            self.open_text = Some(id.to_string());
        }
        if delta.is_empty() {
            return Ok(());
        }
        let content = json!({"messageId": id, "delta": delta});
        self.emit("TEXT_MESSAGE_CONTENT", content).await
    }

    pub(crate) async fn tool_start(
        &mut self,
        call_id: &str,
        name: &str,
        parent: &str,
    ) -> Result<(), Gone> {
        let start = json!({"toolCallId": call_id, "toolCallName": name, "parentMessageId": parent});
        self.emit("TOOL_CALL_START", start).await?;
        self.open_calls.push(call_id.to_string());
        Ok(())
    }

    pub(crate) async fn tool_args(&mut self, call_id: &str, delta: &str) -> Result<(), Gone> {
        if delta.is_empty() {
            return Ok(());
        }
        let args = json!({"toolCallId": call_id, "delta": delta});
        self.emit("TOOL_CALL_ARGS", args).await
    }

    /// Ends the open text message and tool calls.
    pub(crate) async fn close_open(&mut self) -> Result<(), Gone> {
        if let Some(id) = self.open_text.take() {
            self.emit("TEXT_MESSAGE_END", json!({"messageId": id}))
                .await?;
        }
        for call_id in std::mem::take(&mut self.open_calls) {
            self.emit("TOOL_CALL_END", json!({"toolCallId": call_id}))
                .await?;
        }
        Ok(())
    }

    /// `RUN_ERROR`, after closing what is open: always the run's last event.
    pub(crate) async fn fail(&mut self, message: &str, code: &str) -> Result<(), Gone> {
        self.close_open().await?;
        self.emit("RUN_ERROR", json!({"message": message, "code": code}))
            .await
    }
}
