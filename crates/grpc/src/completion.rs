//! `citadel.v1.CompletionService` handlers: the deadline from `grpc-timeout`, a call to the LLM
//! core, errors mapped once. A stream's failure after its first chunk ends it with that status.

use std::{pin::Pin, sync::Arc};

use citadel_llm::{CompletionStream, LlmCore};
use citadel_proto::v1::{
    ChatChunk, ChatRequest, ChatResponse, CompleteChunk, CompleteRequest, CompleteResponse,
    ListLlmModelsRequest, ListLlmModelsResponse, completion_service_server::CompletionService,
};
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use citadel_auth::Caller;
use citadel_proto::v1::CompletionUsage;

use crate::{
    auth::{caller, check_model},
    deadline::deadline,
    status::llm_status,
};

#[derive(Clone)]
pub struct CompletionApi {
    core: Arc<LlmCore>,
}

impl CompletionApi {
    pub fn new(core: Arc<LlmCore>) -> Self {
        CompletionApi { core }
    }
}

type ChunkStream<C> = Pin<Box<dyn Stream<Item = Result<C, Status>> + Send>>;

/// A chunk's usage, if it carries it (the last one does: usage is always asked upstream).
trait Metered {
    fn usage(&self) -> Option<&CompletionUsage>;
}

impl Metered for ChatChunk {
    fn usage(&self) -> Option<&CompletionUsage> {
        self.usage.as_ref()
    }
}

impl Metered for CompleteChunk {
    fn usage(&self) -> Option<&CompletionUsage> {
        self.usage.as_ref()
    }
}

/// Debits a stream's tokens from the caller's budget when it ends: the usage it reported, or,
/// when it ended before that (a disconnect, a failure), one token per chunk seen.
struct StreamMeter {
    caller: Caller,
    chunks: u64,
    reported: bool,
}

impl Drop for StreamMeter {
    fn drop(&mut self) {
        if !self.reported {
            self.caller.record_tokens(self.chunks);
        }
    }
}

fn statuses<C: Metered + Send + 'static>(
    stream: CompletionStream<C>,
    caller: Caller,
) -> ChunkStream<C> {
    let mut meter = StreamMeter {
        caller,
        chunks: 0,
        reported: false,
    };
    Box::pin(stream.map(move |item| {
        if let Ok(chunk) = &item {
            meter.chunks += 1;
            if let Some(usage) = chunk.usage().filter(|_| !meter.reported) {
                meter.reported = true;
                meter.caller.record_tokens(u64::from(usage.total_tokens));
            }
        }
        item.map_err(llm_status)
    }))
}

fn record(caller: &Caller, usage: Option<&CompletionUsage>) {
    caller.record_tokens(usage.map_or(0, |u| u64::from(u.total_tokens)));
}

#[tonic::async_trait]
impl CompletionService for CompletionApi {
    async fn chat(&self, request: Request<ChatRequest>) -> Result<Response<ChatResponse>, Status> {
        let deadline = deadline(request.metadata())?;
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_model(&caller, &request.model)?;
        let answer = self
            .core
            .chat(request, deadline)
            .await
            .map_err(llm_status)?;
        record(&caller, answer.usage.as_ref());
        Ok(Response::new(answer))
    }

    type ChatStreamStream = ChunkStream<ChatChunk>;

    async fn chat_stream(
        &self,
        request: Request<ChatRequest>,
    ) -> Result<Response<Self::ChatStreamStream>, Status> {
        let deadline = deadline(request.metadata())?;
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_model(&caller, &request.model)?;
        let stream = self.core.chat_stream(request, deadline).await;
        Ok(Response::new(statuses(stream.map_err(llm_status)?, caller)))
    }

    async fn complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        let deadline = deadline(request.metadata())?;
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_model(&caller, &request.model)?;
        let answer = self
            .core
            .complete(request, deadline)
            .await
            .map_err(llm_status)?;
        record(&caller, answer.usage.as_ref());
        Ok(Response::new(answer))
    }

    type CompleteStreamStream = ChunkStream<CompleteChunk>;

    async fn complete_stream(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<Self::CompleteStreamStream>, Status> {
        let deadline = deadline(request.metadata())?;
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_model(&caller, &request.model)?;
        let stream = self.core.complete_stream(request, deadline).await;
        Ok(Response::new(statuses(stream.map_err(llm_status)?, caller)))
    }

    async fn list_models(
        &self,
        _request: Request<ListLlmModelsRequest>,
    ) -> Result<Response<ListLlmModelsResponse>, Status> {
        let models = self.core.fleet().map(|f| f.models()).unwrap_or_default();
        Ok(Response::new(models))
    }
}
