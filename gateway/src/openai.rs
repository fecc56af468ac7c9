//! OpenAI's embeddings and models JSON, and its translation to and from the proto contract.
//! Validation that depends on the model lives in the core; only the JSON's shape is checked here.

use base64::{Engine, engine::general_purpose::STANDARD};
use citadel_proto::v1;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// `POST /v1/embeddings` body. Unknown fields (OpenAI's `user`, SDK extras) are ignored.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    pub input: Option<Value>,
    pub model: Option<String>,
    pub encoding_format: Option<String>,
    pub dimensions: Option<i64>,
    /// Extension: cut over-long inputs (default true, as sentence-transformers does).
    pub truncate: Option<bool>,
    /// Extension: L2-normalise (default true).
    pub normalize: Option<bool>,
    /// Extension: a prompt configured for the model (`query`, `document`), as in
    /// sentence-transformers and TEI.
    pub prompt_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    Float,
    /// Little-endian f32, base64: what the OpenAI Python SDK asks for by default.
    Base64,
}

impl EmbeddingsRequest {
    /// The gRPC request and the wanted encoding, or a 400 naming the bad field.
    pub fn into_proto(self) -> Result<(v1::EmbedRequest, EncodingFormat), ApiError> {
        let model = self
            .model
            .ok_or_else(|| ApiError::invalid("model", "you must provide a model parameter"))?;
        let format = match self.encoding_format.as_deref() {
            None | Some("float") => EncodingFormat::Float,
            Some("base64") => EncodingFormat::Base64,
            Some(other) => {
                let msg = format!("encoding_format must be \"float\" or \"base64\", got {other:?}");
                return Err(ApiError::invalid("encoding_format", msg));
            }
        };
        let dimensions = match self.dimensions {
            None => None,
            Some(d) => Some(u32::try_from(d).ok().filter(|d| *d > 0).ok_or_else(|| {
                ApiError::invalid(
                    "dimensions",
                    format!("dimensions must be a positive integer, got {d}"),
                )
            })?),
        };
        let inputs = inputs(self.input)?;
        let request = v1::EmbedRequest {
            model,
            inputs,
            dimensions,
            normalize: self.normalize,
            truncate: self.truncate,
            prompt_name: self.prompt_name,
            // Set from the request's Cache-Control header by the handler.
            cache_policy: v1::CachePolicy::Default.into(),
        };
        Ok((request, format))
    }
}

fn inputs(input: Option<Value>) -> Result<Vec<String>, ApiError> {
    let shape_error = |msg: &str| ApiError::invalid("input", msg);
    match input {
        None | Some(Value::Null) => Err(shape_error("you must provide an input: a string or an array of strings")),
        Some(Value::String(text)) => Ok(vec![text]),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => Ok(text),
                Value::Number(_) | Value::Array(_) => Err(shape_error(
                    "token-id arrays are not supported: send input as a string or an array of strings",
                )),
                _ => Err(ApiError::invalid("input", format!("input[{i}] must be a string"))),
            })
            .collect(),
        Some(_) => Err(shape_error("input must be a string or an array of strings")),
    }
}

#[derive(Debug, Serialize)]
pub struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingObject>,
    pub model: String,
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingObject {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingValue,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
}

impl EmbeddingsResponse {
    pub fn from_proto(response: v1::EmbedResponse, format: EncodingFormat) -> Self {
        let usage = response.usage.unwrap_or_default();
        let data = response
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(index, e)| EmbeddingObject {
                object: "embedding",
                index,
                embedding: encode(e.values, format),
            })
            .collect();
        EmbeddingsResponse {
            object: "list",
            data,
            model: response.model,
            usage: Usage {
                prompt_tokens: usage.prompt_tokens,
                total_tokens: usage.total_tokens,
            },
        }
    }
}

fn encode(values: Vec<f32>, format: EncodingFormat) -> EmbeddingValue {
    match format {
        EncodingFormat::Float => EmbeddingValue::Float(values),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            EmbeddingValue::Base64(STANDARD.encode(bytes))
        }
    }
}

/// One entry of `GET /v1/models`: OpenAI's fields, then ours.
#[derive(Debug, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: String,
    pub dimensions: u32,
    pub max_input_tokens: u32,
    pub backend: String,
    pub state: &'static str,
    pub aliases: Vec<String>,
    /// Prompt names accepted in `prompt_name`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
}

impl From<v1::Model> for ModelObject {
    fn from(model: v1::Model) -> Self {
        let state = match model.state() {
            v1::ModelState::Unspecified => "unknown",
            v1::ModelState::Loading => "loading",
            v1::ModelState::Ready => "ready",
            v1::ModelState::Failed => "failed",
            v1::ModelState::Unavailable => "unavailable",
        };
        ModelObject {
            id: model.id,
            object: "model",
            created: model.created,
            owned_by: model.owned_by,
            dimensions: model.dimensions,
            max_input_tokens: model.max_input_tokens,
            backend: model.backend,
            state,
            aliases: model.aliases,
            prompts: model.prompt_names,
        }
    }
}

/// An LLM model as `/v1/models` lists it: its servers and context length.
#[derive(Debug, Serialize)]
pub struct LlmModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: &'static str,
    pub backend: &'static str,
    pub kind: &'static str,
    pub servers: Vec<String>,
    /// The smallest context length its servers report (null: unknown).
    pub max_model_len: Option<u32>,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_of: Option<String>,
}

impl From<v1::LlmModel> for LlmModelObject {
    fn from(m: v1::LlmModel) -> Self {
        LlmModelObject {
            id: m.id,
            object: "model",
            created: 0,
            owned_by: "vllm",
            backend: "openai",
            kind: "llm",
            servers: m.servers.into_iter().map(|s| s.name).collect(),
            max_model_len: (m.max_model_len > 0).then_some(m.max_model_len),
            state: m.state,
            alias_of: m.alias_of,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ModelEntry {
    Embedding(ModelObject),
    Llm(LlmModelObject),
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelEntry>,
}
