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

use crate::{deadline::deadline, status::llm_status};

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

fn statuses<C: Send + 'static>(stream: CompletionStream<C>) -> ChunkStream<C> {
    Box::pin(stream.map(|item| item.map_err(llm_status)))
}

#[tonic::async_trait]
impl CompletionService for CompletionApi {
    async fn chat(&self, request: Request<ChatRequest>) -> Result<Response<ChatResponse>, Status> {
        let deadline = deadline(request.metadata())?;
        let answer = self.core.chat(request.into_inner(), deadline).await;
        Ok(Response::new(answer.map_err(llm_status)?))
    }

    type ChatStreamStream = ChunkStream<ChatChunk>;

    async fn chat_stream(
        &self,
        request: Request<ChatRequest>,
    ) -> Result<Response<Self::ChatStreamStream>, Status> {
        let deadline = deadline(request.metadata())?;
        let stream = self.core.chat_stream(request.into_inner(), deadline).await;
        Ok(Response::new(statuses(stream.map_err(llm_status)?)))
    }

    async fn complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        let deadline = deadline(request.metadata())?;
        let answer = self.core.complete(request.into_inner(), deadline).await;
        Ok(Response::new(answer.map_err(llm_status)?))
    }

    type CompleteStreamStream = ChunkStream<CompleteChunk>;

    async fn complete_stream(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<Self::CompleteStreamStream>, Status> {
        let deadline = deadline(request.metadata())?;
        let stream = self
            .core
            .complete_stream(request.into_inner(), deadline)
            .await;
        Ok(Response::new(statuses(stream.map_err(llm_status)?)))
    }

    async fn list_models(
        &self,
        _request: Request<ListLlmModelsRequest>,
    ) -> Result<Response<ListLlmModelsResponse>, Status> {
        let models = self.core.fleet().map(|f| f.models()).unwrap_or_default();
        Ok(Response::new(models))
    }
}
