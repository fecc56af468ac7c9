//! Ollama's embedding and model-list JSON (`/api/embed`, `/api/embeddings`, `/api/tags`,
//! `/api/version`), its translation to and from the proto contract, and its error body.
//!
//! As in `openai.rs`, only the JSON's shape is checked here; the core validates the rest (empty
//! inputs, dimensions, lengths) once for every edge. Field names follow Ollama's `api/types.go`.

use axum::{
    body::Body,
    http::header,
    response::{IntoResponse, Response},
};
use citadel_proto::v1;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;

/// An [`ApiError`] in Ollama's body, `{"error": "..."}`. The status and headers (`Retry-After`
/// on a 429) come from `ApiError`'s own response, so the one `Status → HTTP` mapping stays in
/// `error.rs`; only the body is swapped.
#[derive(Debug)]
pub struct OllamaError(pub ApiError);

impl From<ApiError> for OllamaError {
    fn from(error: ApiError) -> Self {
        OllamaError(error)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&json!({"error": self.0.message})).unwrap_or_default();
        let (mut parts, _) = self.0.into_response().into_parts();
        // The OpenAI body's length would be wrong for this one (axum sets none today).
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::from(body))
    }
}

/// `POST /api/embed` body. Ollama's `keep_alive` and `options` tune its model runner (how long
/// weights stay loaded, context size); Citadel's models stay loaded and configured, so both are
/// accepted, whatever their JSON, and ignored like any other unknown field.
#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    pub model: Option<String>,
    pub input: Option<Value>,
    /// Cut over-long inputs (default true in Ollama and in the core alike).
    pub truncate: Option<bool>,
    /// Ollama's Go client omits 0 (`omitempty`), so 0 means "the full dimension".
    pub dimensions: Option<i64>,
}

impl EmbedRequest {
    pub fn into_proto(self) -> Result<v1::EmbedRequest, ApiError> {
        let dimensions = match self.dimensions {
            None | Some(0) => None,
            Some(d) => Some(u32::try_from(d).map_err(|_| {
                ApiError::invalid(
                    "dimensions",
                    format!("dimensions must be positive, got {d}"),
                )
            })?),
        };
        Ok(v1::EmbedRequest {
            model: model(self.model)?,
            inputs: inputs(self.input)?,
            dimensions,
            // Ollama documents /api/embed's vectors as L2-normalised.
            normalize: Some(true),
            truncate: self.truncate,
            prompt_name: None,
            // Set from the request's Cache-Control header by the handler.
            cache_policy: v1::CachePolicy::Default.into(),
        })
    }
}

/// `POST /api/embeddings` body: Ollama's legacy, one-prompt endpoint.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: Option<String>,
    pub prompt: Option<String>,
}

impl EmbeddingsRequest {
    pub fn into_proto(self) -> Result<v1::EmbedRequest, ApiError> {
        let prompt = self
            .prompt
            .ok_or_else(|| ApiError::invalid("prompt", "prompt is required"))?;
        Ok(v1::EmbedRequest {
            model: model(self.model)?,
            inputs: vec![prompt],
            dimensions: None,
            // Ollama's legacy endpoint returns the model's raw (pooled) vector, unnormalised;
            // clients written against it may normalise themselves or rely on the length.
            normalize: Some(false),
            truncate: None,
            prompt_name: None,
            // Set from the request's Cache-Control header by the handler.
            cache_policy: v1::CachePolicy::Default.into(),
        })
    }
}

/// Ollama sends `""` from its clients' default arguments; both that and a missing field are 400.
fn model(model: Option<String>) -> Result<String, ApiError> {
    model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("model", "model is required"))
}

/// A string or an array of strings; emptiness is for the core to judge.
fn inputs(input: Option<Value>) -> Result<Vec<String>, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "input",
            "invalid input type: send a string or an array of strings",
        )
    };
    match input {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![text]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                _ => Err(invalid()),
            })
            .collect(),
        Some(_) => Err(invalid()),
    }
}

#[derive(Debug, Serialize)]
pub struct EmbedResponse {
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
    /// Nanoseconds, as every Ollama duration.
    pub total_duration: u64,
    /// Always 0: models are loaded before the server says it is ready.
    pub load_duration: u64,
    pub prompt_eval_count: u32,
}

impl EmbedResponse {
    /// `requested` is the name the caller used: Ollama echoes it rather than a canonical name.
    pub fn from_proto(response: v1::EmbedResponse, requested: String) -> Self {
        let total_us = response.timing.map_or(0, |t| t.total_us);
        EmbedResponse {
            model: requested,
            embeddings: response.embeddings.into_iter().map(|e| e.values).collect(),
            total_duration: total_us.saturating_mul(1000),
            load_duration: 0,
            prompt_eval_count: response.usage.map_or(0, |u| u.prompt_tokens),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EmbeddingsResponse {
    pub embedding: Vec<f32>,
}

impl From<v1::EmbedResponse> for EmbeddingsResponse {
    fn from(response: v1::EmbedResponse) -> Self {
        let embedding = response.embeddings.into_iter().next().map(|e| e.values);
        EmbeddingsResponse {
            embedding: embedding.unwrap_or_default(),
        }
    }
}

/// `GET /api/tags`.
#[derive(Debug, Serialize)]
pub struct TagList {
    pub models: Vec<Tag>,
}

#[derive(Debug, Serialize)]
pub struct Tag {
    pub name: String,
    pub model: String,
    pub modified_at: String,
    /// Citadel serves no model files, so there is no size to report.
    pub size: u64,
    pub digest: String,
    pub details: TagDetails,
    pub capabilities: [&'static str; 1],
}

/// Ollama's `ModelDetails`; what Citadel cannot know (family, quantization) is left empty.
#[derive(Debug, Serialize)]
pub struct TagDetails {
    pub parent_model: &'static str,
    /// The backend: `onnx`, `ollama`, `openai`.
    pub format: String,
    pub family: &'static str,
    pub families: Option<Vec<String>>,
    pub parameter_size: &'static str,
    pub quantization_level: &'static str,
    pub context_length: u32,
    pub embedding_length: u32,
}

impl From<v1::Model> for Tag {
    fn from(model: v1::Model) -> Self {
        Tag {
            name: model.id.clone(),
            digest: digest(&model.id),
            model: model.id,
            modified_at: rfc3339(model.created),
            size: 0,
            details: TagDetails {
                parent_model: "",
                format: model.backend,
                family: "",
                families: None,
                parameter_size: "",
                quantization_level: "",
                context_length: model.max_input_tokens,
                embedding_length: model.dimensions,
            },
            capabilities: ["embedding"],
        }
    }
}

/// 64 hex characters derived from the model id alone: NOT a digest of any file (Citadel has no
/// blobs to hash). Clients use it as an opaque cache key, so it only has to be stable per id;
/// it does not change when a model's weights do. Four FNV-1a-64 lanes, each seeded by its index.
pub fn digest(id: &str) -> String {
    (0u8..4)
        .map(|lane| {
            let hash = std::iter::once(lane)
                .chain(id.bytes())
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
                });
            format!("{hash:016x}")
        })
        .collect()
}

/// Unix seconds as RFC 3339 in UTC (`2024-05-01T12:00:00Z`), which Go's `time.Time` and
/// pydantic's `datetime` both parse.
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day): Howard Hinnant's
/// `civil_from_days`, so no date crate is needed for one timestamp format.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn digests_are_64_hex_and_stable_per_id() {
        let a = digest("all-minilm");
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(a, digest("all-minilm"));
        assert_ne!(a, digest("all-minilm:int8"));
    }

    #[tokio::test]
    async fn errors_keep_status_and_retry_after_with_ollamas_body() {
        let error = ApiError {
            retry_after: Some(3),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "requests", "queue full")
        };
        let response = OllamaError(error).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers();
        assert_eq!(
            headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
        assert_eq!(
            headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let body = axum::body::to_bytes(response.into_body(), 1024).await;
        let body: Value = body
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        assert_eq!(body, json!({"error": "queue full"}));
    }
}
