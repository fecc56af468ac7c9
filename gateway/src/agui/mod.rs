//! The AG-UI agent, `POST /api/v1/agui`: what a CopilotKit front end (or its runtime's
//! `HttpAgent`) runs. It takes a `RunAgentInput` and answers with AG-UI events over SSE:
//! `RUN_STARTED`, the model's text and tool calls as they stream from
//! `CompletionService.ChatStream`, Citadel's own actions run inside the loop (their results
//! as `TOOL_CALL_RESULT`, workflow progress as shared state), and `RUN_FINISHED` or
//! `RUN_ERROR` last, always. Tools the client brought are left to the client: the run ends
//! with them pending and the browser starts the next run with their results. A client that
//! disconnects drops the run, and with it the model call.

pub mod actions;
mod events;
mod input;
mod run;

use std::{convert::Infallible, time::Duration};

use axum::response::{
    IntoResponse, Response,
    sse::{Event, Sse},
};
use citadel_auth::Permission;
use futures_util::Stream;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;

use crate::{error::ApiError, extract, mesh_client::Mesh};
use input::RunAgentInput;

/// What the agent needs from the configuration (`[agui]`).
#[derive(Debug, Clone)]
pub struct AguiSettings {
    /// Empty: the first model the LLM servers list.
    pub default_model: String,
    pub embedding_model: String,
    pub max_iterations: u32,
    pub workflow_wait: Duration,
}

/// Events buffered ahead of a slow client.
const BUFFER: usize = 64;

/// `POST /api/v1/agui`.
pub async fn run(
    mesh: Mesh,
    extract::Json(input): extract::Json<RunAgentInput>,
) -> Result<Response, ApiError> {
    input.check()?;
    // Refused with a status, not inside a stream: a client sees 401/403/429 at once.
    mesh.admit(Permission::Completions, "/api/v1/agui").await?;
    let (tx, rx) = mpsc::channel(BUFFER);
    let task = mesh
        .realtime
        .streams
        .open
        .clone()
        .spawn(run::agent(mesh, input, tx));
    let events = Cancelling {
        inner: ReceiverStream::new(rx),
        task,
    };
    Ok(Sse::new(events).into_response())
}

/// The event stream; dropping it (the client went away) stops the run and its model call.
struct Cancelling {
    inner: ReceiverStream<Result<Event, Infallible>>,
    task: JoinHandle<()>,
}

impl Stream for Cancelling {
    type Item = Result<Event, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl Drop for Cancelling {
    fn drop(&mut self) {
        self.task.abort();
    }
}
