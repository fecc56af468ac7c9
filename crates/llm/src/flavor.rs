//! What differs between chat and text completions, so one call path serves both: the path,
//! the body, the parsers, and where the usage and the server's name go.

use citadel_proto::v1::{
    ChatChunk, ChatRequest, ChatResponse, CompleteChunk, CompleteRequest, CompleteResponse,
    CompletionUsage,
};

use crate::{LlmError, fleet::Urls, wire};

pub(crate) trait Flavor: Send + Sync + 'static {
    type Request: Send + Sync;
    type Response: Send + 'static;
    type Chunk: Send + 'static;
    const KIND: &'static str;
    /// The request field a context-length refusal is about.
    const INPUT_PARAM: &'static str;

    /// Where a server takes this kind.
    fn url(urls: &Urls) -> &reqwest::Url;
    fn model(request: &Self::Request) -> &str;
    fn validate(request: &Self::Request) -> Result<(), LlmError>;
    fn body(request: &Self::Request, model: &str, stream: bool) -> Vec<u8>;
    fn response(body: &[u8]) -> wire::Parsed<Self::Response>;
    fn chunk(data: &str) -> wire::Parsed<Result<Self::Chunk, wire::InBand>>;
    /// Whether the caller wants chunks as the server's JSON (`raw_chunks`).
    fn raw(request: &Self::Request) -> bool;
    /// A chunk carrying the server's JSON as it came.
    fn raw_chunk(data: &str, usage: Option<CompletionUsage>) -> Self::Chunk;
    /// Names the server that answered; returns the usage.
    fn stamp_response(r: &mut Self::Response, server: &str) -> Option<CompletionUsage>;
    fn stamp_chunk(c: &mut Self::Chunk, server: &str) -> Option<CompletionUsage>;
}

pub(crate) struct Chat;

impl Flavor for Chat {
    type Request = ChatRequest;
    type Response = ChatResponse;
    type Chunk = ChatChunk;
    const KIND: &'static str = "chat";
    const INPUT_PARAM: &'static str = "messages";

    fn url(urls: &Urls) -> &reqwest::Url {
        &urls.chat
    }

    fn model(request: &ChatRequest) -> &str {
        &request.model
    }

    fn validate(request: &ChatRequest) -> Result<(), LlmError> {
        if request.messages.is_empty() {
            return Err(LlmError::invalid(
                "messages",
                "`messages` must hold at least one message",
            ));
        }
        for (i, m) in request.messages.iter().enumerate() {
            let roles = ["system", "developer", "user", "assistant", "tool"];
            if !roles.contains(&m.role.as_str()) {
                let message = format!(
                    "messages[{i}].role must be one of system, developer, user, assistant, tool; got `{}`",
                    crate::error::quote(&m.role)
                );
                return Err(LlmError::invalid(&format!("messages[{i}].role"), message));
            }
            if let Some(j) = m.parts.iter().position(|p| p.r#type.is_empty()) {
                let message = format!("messages[{i}].content[{j}] has no `type`");
                return Err(LlmError::invalid(
                    &format!("messages[{i}].content"),
                    message,
                ));
            }
        }
        Ok(())
    }

    fn body(request: &ChatRequest, model: &str, stream: bool) -> Vec<u8> {
        wire::chat_body(request, model, stream)
    }

    fn raw(request: &ChatRequest) -> bool {
        request.raw_chunks
    }

    fn raw_chunk(data: &str, usage: Option<CompletionUsage>) -> ChatChunk {
        ChatChunk {
            raw_json: data.as_bytes().to_vec(),
            usage,
            ..ChatChunk::default()
        }
    }

    fn response(body: &[u8]) -> wire::Parsed<ChatResponse> {
        wire::chat_response(body)
    }

    fn chunk(data: &str) -> wire::Parsed<Result<ChatChunk, wire::InBand>> {
        wire::chat_chunk(data)
    }

    fn stamp_response(r: &mut ChatResponse, server: &str) -> Option<CompletionUsage> {
        r.server = server.to_string();
        r.usage
    }

    fn stamp_chunk(c: &mut ChatChunk, server: &str) -> Option<CompletionUsage> {
        c.server = server.to_string();
        c.usage
    }
}

pub(crate) struct Text;

impl Flavor for Text {
    type Request = CompleteRequest;
    type Response = CompleteResponse;
    type Chunk = CompleteChunk;
    const KIND: &'static str = "text";
    const INPUT_PARAM: &'static str = "prompt";

    fn url(urls: &Urls) -> &reqwest::Url {
        &urls.completions
    }

    fn model(request: &CompleteRequest) -> &str {
        &request.model
    }

    fn validate(request: &CompleteRequest) -> Result<(), LlmError> {
        if request.prompt.is_empty() {
            return Err(LlmError::invalid(
                "prompt",
                "`prompt` must hold at least one prompt",
            ));
        }
        Ok(())
    }

    fn body(request: &CompleteRequest, model: &str, stream: bool) -> Vec<u8> {
        wire::complete_body(request, model, stream)
    }

    fn raw(request: &CompleteRequest) -> bool {
        request.raw_chunks
    }

    fn raw_chunk(data: &str, usage: Option<CompletionUsage>) -> CompleteChunk {
        CompleteChunk {
            raw_json: data.as_bytes().to_vec(),
            usage,
            ..CompleteChunk::default()
        }
    }

    fn response(body: &[u8]) -> wire::Parsed<CompleteResponse> {
        wire::complete_response(body)
    }

    fn chunk(data: &str) -> wire::Parsed<Result<CompleteChunk, wire::InBand>> {
        wire::complete_chunk(data)
    }

    fn stamp_response(r: &mut CompleteResponse, server: &str) -> Option<CompletionUsage> {
        r.server = server.to_string();
        r.usage
    }

    fn stamp_chunk(c: &mut CompleteChunk, server: &str) -> Option<CompletionUsage> {
        c.server = server.to_string();
        c.usage
    }
}
