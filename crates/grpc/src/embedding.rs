//! `citadel.v1.EmbeddingService` handlers: convert, call the core, convert back.

use std::{pin::Pin, sync::Arc};

use citadel_embeddings::{EmbeddingCore, FlushProgress, model_tag};
use citadel_proto::v1::{
    self, EmbedRequest, EmbedResponse, EmbedStreamRequest, EmbedStreamResponse,
    embed_stream_response, embedding_service_server::EmbeddingService,
};
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use citadel_auth::Caller;

use crate::{
    auth::{caller, check_model},
    convert,
    deadline::deadline,
    status::to_status,
};

/// Requests of one `EmbedStream` call processed at once; the batcher merges them.
const STREAM_CONCURRENCY: usize = 16;

#[derive(Clone)]
pub struct EmbeddingApi {
    core: Arc<EmbeddingCore>,
}

impl EmbeddingApi {
    pub fn new(core: Arc<EmbeddingCore>) -> Self {
        EmbeddingApi { core }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<EmbedStreamResponse, Status>> + Send>>;
type FlushStream = Pin<Box<dyn Stream<Item = Result<v1::FlushCacheProgress, Status>> + Send>>;

#[tonic::async_trait]
impl EmbeddingService for EmbeddingApi {
    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        let deadline = deadline(request.metadata())?;
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_model(&caller, &request.model)?;
        let params = convert::embed_params(request, deadline);
        let done = self.core.embed(params).await.map_err(to_status)?;
        caller.record_tokens(done.prompt_tokens);
        Ok(Response::new(convert::embed_response(done)))
    }

    type EmbedStreamStream = ResponseStream;

    async fn embed_stream(
        &self,
        request: Request<Streaming<EmbedStreamRequest>>,
    ) -> Result<Response<Self::EmbedStreamStream>, Status> {
        let deadline = deadline(request.metadata())?;
        let caller = caller(&request)?;
        let core = self.core.clone();
        let answers = request
            .into_inner()
            .map(move |message| {
                let core = core.clone();
                let caller = caller.clone();
                async move {
                    let message = message?;
                    let result = match message.request {
                        Some(request) => answer(&core, &caller, request, deadline).await,
                        None => stream_error(Status::invalid_argument(
                            "each EmbedStreamRequest must carry a request",
                        )),
                    };
                    Ok(EmbedStreamResponse {
                        id: message.id,
                        result: Some(result),
                    })
                }
            })
            .buffer_unordered(STREAM_CONCURRENCY);
        Ok(Response::new(Box::pin(answers)))
    }

    async fn list_models(
        &self,
        _request: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        let models = self.core.models().into_iter().map(convert::model).collect();
        Ok(Response::new(v1::ListModelsResponse { models }))
    }

    async fn get_model(
        &self,
        request: Request<v1::GetModelRequest>,
    ) -> Result<Response<v1::Model>, Status> {
        let view = self
            .core
            .model(&request.into_inner().model)
            .map_err(to_status)?;
        Ok(Response::new(convert::model(view)))
    }

    async fn get_cache_status(
        &self,
        _request: Request<v1::GetCacheStatusRequest>,
    ) -> Result<Response<v1::CacheStatus>, Status> {
        let status = convert::cache_status(self.core.cache_status());
        Ok(Response::new(status))
    }

    type FlushCacheStream = FlushStream;

    async fn flush_cache(
        &self,
        request: Request<v1::FlushCacheRequest>,
    ) -> Result<Response<FlushStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_model(&caller, &request.model)?;
        let model = self
            .core
            .model(&request.model)
            .map_err(to_status)?
            .info
            .name;
        let Some(cache) = self.core.cache().cloned() else {
            return Err(Status::failed_precondition(
                "this server has no embedding cache (cache.mode = \"off\"): nothing to flush",
            ));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        // Spawned: a caller that hangs up does not leave the flush half done.
        tokio::spawn(async move {
            let sender = tx.clone();
            let name = model.clone();
            // Progress is advisory: a slow reader misses some, never the last message.
            let report = move |p: FlushProgress| {
                let _ = sender.try_send(Ok(flush_progress(&name, p, false)));
            };
            let last = match cache.flush_model(model_tag(&model), &report).await {
                Ok(done) => Ok(flush_progress(&model, done, true)),
                Err(e) => Err(Status::unavailable(format!(
                    "flushing `{model}` stopped: {e}; run it again to finish"
                ))),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn flush_progress(model: &str, p: FlushProgress, done: bool) -> v1::FlushCacheProgress {
    v1::FlushCacheProgress {
        model: model.to_string(),
        deleted: p.deleted,
        done,
    }
}

async fn answer(
    core: &EmbeddingCore,
    caller: &Caller,
    request: EmbedRequest,
    deadline: Option<tokio::time::Instant>,
) -> embed_stream_response::Result {
    if let Err(status) = check_model(caller, &request.model) {
        return stream_error(status);
    }
    match core.embed(convert::embed_params(request, deadline)).await {
        Ok(done) => {
            caller.record_tokens(done.prompt_tokens);
            embed_stream_response::Result::Response(convert::embed_response(done))
        }
        Err(error) => stream_error(to_status(error)),
    }
}

fn stream_error(status: Status) -> embed_stream_response::Result {
    let param = status.metadata().get(citadel_proto::metadata::ERROR_PARAM);
    embed_stream_response::Result::Error(v1::StreamError {
        code: status.code().into(),
        message: status.message().into(),
        param: param
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    })
}
