//! The two upstream wire formats: Ollama's `POST /api/embed` and OpenAI's `POST /v1/embeddings`.
//! Parsing is strict about shape (count, dimensions, finite numbers), because a wrong vector is
//! worse than an error.

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Ollama,
    OpenAi,
}

/// Vectors in input order and the tokens the server counted.
#[derive(Debug, Default)]
pub struct Answer {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u64,
}

impl Protocol {
    /// The embedding URL under an endpoint's base URL. OpenAI bases may or may not end in
    /// `/v1` (`http://vllm:8000` and `https://api.openai.com/v1` both work).
    pub fn embed_url(self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        match self {
            Protocol::Ollama => format!("{base}/api/embed"),
            Protocol::OpenAi if has_path(base) => format!("{base}/embeddings"),
            Protocol::OpenAi => format!("{base}/v1/embeddings"),
        }
    }

    pub fn request_body(self, model: &str, inputs: &[String], truncate: bool) -> Vec<u8> {
        let body = match self {
            Protocol::Ollama => serde_json::to_vec(&OllamaRequest {
                model,
                input: inputs,
                truncate,
            }),
            // OpenAI has no truncate flag: over-long inputs are the server's to refuse.
            Protocol::OpenAi => serde_json::to_vec(&OpenAiRequest {
                model,
                input: inputs,
                encoding_format: "float",
            }),
        };
        body.unwrap_or_default()
    }

    /// Parses a 2xx body: exactly `count` vectors of `dims` finite numbers, or why not.
    pub fn parse_answer(self, body: &[u8], count: usize, dims: usize) -> Result<Answer, String> {
        let answer = match self {
            Protocol::Ollama => {
                let parsed: OllamaAnswer = serde_json::from_slice(body).map_err(malformed)?;
                Answer {
                    vectors: parsed.embeddings,
                    prompt_tokens: parsed.prompt_eval_count.unwrap_or(0),
                }
            }
            Protocol::OpenAi => openai_answer(body)?,
        };
        if answer.vectors.len() != count {
            let n = answer.vectors.len();
            return Err(format!("answered {n} vectors for {count} inputs"));
        }
        if let Some(v) = answer.vectors.iter().find(|v| v.len() != dims) {
            let n = v.len();
            return Err(format!(
                "answered vectors of {n} dimensions; the model is configured with {dims}"
            ));
        }
        if answer.vectors.iter().flatten().any(|x| !x.is_finite()) {
            return Err("answered a vector with a non-finite component".into());
        }
        Ok(answer)
    }
}

fn has_path(base: &str) -> bool {
    let after_scheme = base.split_once("://").map_or(base, |(_, rest)| rest);
    after_scheme.contains('/')
}

fn malformed(e: serde_json::Error) -> String {
    format!("answered malformed JSON ({e})")
}

#[derive(Serialize)]
struct OllamaRequest<'a> {
    model: &'a str,
    input: &'a [String],
    truncate: bool,
}

#[derive(Serialize)]
struct OpenAiRequest<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
}

#[derive(Deserialize)]
struct OllamaAnswer {
    embeddings: Vec<Vec<f32>>,
    prompt_eval_count: Option<u64>,
}

#[derive(Deserialize)]
struct OpenAiAnswer {
    data: Vec<OpenAiEmbedding>,
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct OpenAiEmbedding {
    index: Option<usize>,
    embedding: OpenAiVector,
}

/// Floats were asked for, but some servers answer base64 (little-endian f32) regardless.
#[derive(Deserialize)]
#[serde(untagged)]
enum OpenAiVector {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Deserialize)]
struct OpenAiUsage {
    prompt_tokens: Option<u64>,
}

fn openai_answer(body: &[u8]) -> Result<Answer, String> {
    let mut parsed: OpenAiAnswer = serde_json::from_slice(body).map_err(malformed)?;
    // `data` carries its own order; do not trust the array's. The indices must then be exactly
    // 0..n: a repeated or missing one would hand an input another input's vector.
    if parsed.data.iter().all(|d| d.index.is_some()) {
        parsed.data.sort_by_key(|d| d.index);
        let in_order = parsed
            .data
            .iter()
            .enumerate()
            .all(|(i, d)| d.index == Some(i));
        if !in_order {
            return Err("answered embeddings whose indices are not 0..n".into());
        }
    }
    let vectors = parsed
        .data
        .into_iter()
        .map(|d| match d.embedding {
            OpenAiVector::Floats(v) => Ok(v),
            OpenAiVector::Base64(text) => decode_base64(&text),
        })
        .collect::<Result<_, _>>()?;
    let prompt_tokens = parsed.usage.and_then(|u| u.prompt_tokens).unwrap_or(0);
    Ok(Answer {
        vectors,
        prompt_tokens,
    })
}

fn decode_base64(text: &str) -> Result<Vec<f32>, String> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| format!("answered an embedding that is not valid base64 ({e})"))?;
    if bytes.len() % 4 != 0 {
        return Err("answered a base64 embedding whose length is not a multiple of 4".into());
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn embed_urls_follow_each_servers_convention() {
        let ollama = Protocol::Ollama;
        assert_eq!(
            ollama.embed_url("http://h:11434/"),
            "http://h:11434/api/embed"
        );
        let openai = Protocol::OpenAi;
        assert_eq!(
            openai.embed_url("http://h:8000"),
            "http://h:8000/v1/embeddings"
        );
        assert_eq!(
            openai.embed_url("https://api.openai.com/v1"),
            "https://api.openai.com/v1/embeddings"
        );
    }

    #[test]
    fn openai_answers_are_reordered_and_base64_decoded() {
        let one: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let body = serde_json::json!({"data": [
            {"index": 1, "embedding": STANDARD.encode(one)},
            {"index": 0, "embedding": [3.0, 4.0]},
        ], "usage": {"prompt_tokens": 7}});
        let answer = Protocol::OpenAi
            .parse_answer(body.to_string().as_bytes(), 2, 2)
            .unwrap();
        assert_eq!(answer.vectors, vec![vec![3.0, 4.0], vec![1.0, 2.0]]);
        assert_eq!(answer.prompt_tokens, 7);

        let twice = serde_json::json!({"data": [
            {"index": 0, "embedding": [1.0, 2.0]}, {"index": 0, "embedding": [3.0, 4.0]},
        ]});
        let err = Protocol::OpenAi.parse_answer(twice.to_string().as_bytes(), 2, 2);
        assert!(err.unwrap_err().contains("indices"));
    }

    #[test]
    fn wrong_shapes_are_refused_with_the_reason() {
        let body = br#"{"embeddings": [[1.0, 2.0]], "prompt_eval_count": 3}"#;
        let err = Protocol::Ollama.parse_answer(body, 1, 3).unwrap_err();
        assert!(err.contains("2 dimensions"), "{err}");
        let err = Protocol::Ollama.parse_answer(body, 2, 2).unwrap_err();
        assert!(err.contains("1 vectors for 2 inputs"), "{err}");
        let err = Protocol::Ollama.parse_answer(b"{\"embeddings\": [[1.0", 1, 2);
        assert!(err.unwrap_err().contains("malformed JSON"));
    }
}
