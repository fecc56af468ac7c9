//! Ollama's and OpenAI's embedding JSON, as the real servers write it.

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::StandInConfig;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Protocol {
    /// `POST /api/embed`.
    Ollama,
    /// `POST /v1/embeddings`.
    OpenAi,
}

pub(crate) struct EmbedRequest {
    pub(crate) model: String,
    pub(crate) inputs: Vec<String>,
    /// OpenAI's `encoding_format: "base64"`.
    pub(crate) base64: bool,
}

#[derive(Deserialize)]
struct Body {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
}

pub(crate) fn parse(protocol: Protocol, body: &[u8]) -> Result<EmbedRequest, String> {
    let body: Body = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let inputs = match body.input {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err("input must be strings".to_string()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("input must be a string or an array of strings".into()),
    };
    let base64 =
        matches!(protocol, Protocol::OpenAi) && body.encoding_format.as_deref() == Some("base64");
    Ok(EmbedRequest {
        model: body.model,
        inputs,
        base64,
    })
}

impl Protocol {
    pub(crate) fn error(self, message: &str) -> Vec<u8> {
        let body = match self {
            Protocol::Ollama => json!({ "error": message }),
            Protocol::OpenAi => json!({"error": {
                "message": message, "type": "invalid_request_error", "param": null, "code": null
            }}),
        };
        body.to_string().into_bytes()
    }

    pub(crate) fn answer(self, request: &EmbedRequest, dims: usize, base64: bool) -> Vec<u8> {
        let vectors = request.inputs.iter().map(|text| vector(text, dims));
        let tokens: usize = request.inputs.iter().map(|t| token_count(t)).sum();
        let body = match self {
            Protocol::Ollama => json!({
                "model": request.model,
                "embeddings": vectors.collect::<Vec<_>>(),
                "total_duration": 1_000_000,
                "load_duration": 1_000,
                "prompt_eval_count": tokens,
            }),
            Protocol::OpenAi => {
                let data: Vec<Value> = vectors
                    .enumerate()
                    .map(|(index, v)| {
                        let embedding = if base64 {
                            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                            Value::String(STANDARD.encode(bytes))
                        } else {
                            json!(v)
                        };
                        json!({"object": "embedding", "index": index, "embedding": embedding})
                    })
                    .collect();
                json!({
                    "object": "list",
                    "data": data,
                    "model": request.model,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                })
            }
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// Ollama's `GET /api/tags`.
pub(crate) fn tags(config: &StandInConfig) -> Vec<u8> {
    let mut names: Vec<&String> = config.models.keys().collect();
    names.sort();
    let models: Vec<Value> = names
        .into_iter()
        .map(|name| {
            json!({
                "name": format!("{name}:latest"), "model": format!("{name}:latest"),
                "modified_at": "2026-01-01T00:00:00Z", "size": 0, "digest": "0".repeat(64),
                "details": {"format": "gguf", "family": "bert", "families": ["bert"],
                            "parameter_size": "0", "quantization_level": "F16"},
            })
        })
        .collect();
    json!({ "models": models }).to_string().into_bytes()
}

pub(crate) fn version() -> Vec<u8> {
    br#"{"version":"0.0.0-standin"}"#.to_vec()
}

/// Words, as a stand-in for tokens.
fn token_count(text: &str) -> usize {
    text.split_whitespace().count().max(1)
}

/// The stand-in's vector for `text`: deterministic, unit length, different for every text.
pub fn vector(text: &str, dims: usize) -> Vec<f32> {
    // FNV-1a seeds an xorshift64* stream.
    let mut state = text
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
        .max(1);
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bits = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            (bits as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}
