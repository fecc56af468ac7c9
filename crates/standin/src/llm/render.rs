//! vLLM's JSON as it writes it: errors, unary answers and the chunks of a stream. Stream chunks
//! are written by hand into one buffer per step, from a prefix rendered once per stream.

use std::io::Write;

use serde_json::{Value, json};

use super::request::{Endpoint, Output, Plan};

/// An error answer, in vLLM's `ErrorResponse` shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) message: String,
    pub(crate) param: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(
        status: u16,
        message: impl Into<String>,
        param: Option<&'static str>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            param,
        }
    }

    /// The `type` vLLM (and OpenAI's SDK naming) gives a status.
    fn kind(&self) -> &'static str {
        match self.status {
            401 => "AuthenticationError",
            403 => "PermissionDeniedError",
            404 => "NotFoundError",
            409 => "ConflictError",
            422 => "UnprocessableEntityError",
            429 => "RateLimitError",
            503 => "ServiceUnavailableError",
            400..=499 => "BadRequestError",
            _ => "InternalServerError",
        }
    }

    /// `{"error":{...}}`, or with `flat` the older `{"object":"error",...}`.
    pub(crate) fn body(&self, flat: bool) -> Vec<u8> {
        let info = json!({
            "message": self.message,
            "type": self.kind(),
            "param": self.param,
            "code": self.status,
        });
        let body = if flat {
            let mut info = info;
            if let Some(map) = info.as_object_mut() {
                map.insert("object".into(), Value::from("error"));
            }
            info
        } else {
            json!({ "error": info })
        };
        body.to_string().into_bytes()
    }
}

/// The id and creation time of one answer.
pub(crate) struct Meta {
    pub(crate) id: String,
    pub(crate) created: u64,
}

/// vLLM's logprob for every generated token; alternatives rank below it.
const LOGPROB: f64 = -0.1;

fn alternatives(token: &str, k: u32) -> impl Iterator<Item = (String, f64)> + '_ {
    (0..k).map(move |j| match j {
        0 => (token.to_string(), LOGPROB),
        j => (format!("alt{j} "), -1.0 - f64::from(j)),
    })
}

/// A chat logprob entry: `{"token","logprob","bytes","top_logprobs":[...]}`.
fn chat_logprob(token: &str, k: u32) -> Value {
    let top: Vec<Value> = alternatives(token, k)
        .map(|(t, lp)| json!({"token": t, "logprob": lp, "bytes": t.as_bytes()}))
        .collect();
    json!({"token": token, "logprob": LOGPROB, "bytes": token.as_bytes(), "top_logprobs": top})
}

/// Text completions' logprobs for the pieces `tokens`, the first at `offset`.
fn text_logprobs(tokens: &[String], mut offset: usize, k: u32) -> Value {
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        offsets.push(offset);
        offset += t.len();
    }
    let top: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let alts: serde_json::Map<String, Value> = alternatives(t, k.max(1))
                .map(|(t, lp)| (t, lp.into()))
                .collect();
            Value::Object(alts)
        })
        .collect();
    json!({
        "text_offset": offsets,
        "token_logprobs": vec![LOGPROB; tokens.len()],
        "tokens": tokens,
        "top_logprobs": top,
    })
}

fn usage(plan: &Plan) -> Value {
    let completion = plan.completion_tokens.saturating_mul(plan.choices);
    json!({
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": plan.prompt_tokens.saturating_add(completion),
    })
}

/// The whole answer of a unary request.
pub(crate) fn unary(plan: &Plan, meta: &Meta) -> Vec<u8> {
    let output = &plan.output;
    let pieces: Vec<String> = (0..output.chunks()).map(|i| output.piece(i)).collect();
    let choices: Vec<Value> = (0..plan.choices)
        .map(|index| match (plan.endpoint, output) {
            (Endpoint::Chat, Output::ToolCall { name, first_id, .. }) => json!({
                "index": index,
                "message": {"role": "assistant", "content": null, "tool_calls": [{
                    "id": format!("call_{}", first_id + u64::from(index)),
                    "type": "function",
                    "function": {"name": name, "arguments": output.text()},
                }]},
                "logprobs": null,
                "finish_reason": plan.finish,
            }),
            (Endpoint::Chat, _) => json!({
                "index": index,
                "message": {"role": "assistant", "content": output.text(), "tool_calls": []},
                "logprobs": plan.logprobs.map(|k| json!({
                    "content": pieces.iter().map(|t| chat_logprob(t, k)).collect::<Vec<_>>()
                })),
                "finish_reason": plan.finish,
            }),
            (Endpoint::Text, _) => json!({
                "index": index,
                "text": output.text(),
                "logprobs": plan.logprobs.map(|k| text_logprobs(&pieces, 0, k)),
                "finish_reason": plan.finish,
            }),
        })
        .collect();
    let object = match plan.endpoint {
        Endpoint::Chat => "chat.completion",
        Endpoint::Text => "text_completion",
    };
    json!({
        "id": meta.id,
        "object": object,
        "created": meta.created,
        "model": plan.model,
        "choices": choices,
        "usage": usage(plan),
    })
    .to_string()
    .into_bytes()
}

/// Writes the SSE frames of one stream.
pub(crate) struct Chunks {
    /// `data: {"id":..,"object":..,"created":..,"model":..,"choices":[`
    head: Vec<u8>,
    /// What closes a chunk after its choice.
    tail: &'static [u8],
}

impl Chunks {
    pub(crate) fn new(plan: &Plan, meta: &Meta) -> Self {
        let object = match plan.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Text => "text_completion",
        };
        let mut head = Vec::with_capacity(128);
        let _ = write!(
            head,
            "data: {{\"id\":\"{}\",\"object\":\"{object}\",\"created\":{},\"model\":",
            meta.id, meta.created
        );
        let _ = serde_json::to_writer(&mut head, &plan.model);
        head.extend_from_slice(b",\"choices\":[");
        let tail: &'static [u8] = if plan.include_usage {
            b"],\"usage\":null}\n\n"
        } else {
            b"]}\n\n"
        };
        Chunks { head, tail }
    }

    /// Chat's first chunk of a choice.
    pub(crate) fn role(&self, out: &mut Vec<u8>, index: u32) {
        out.extend_from_slice(&self.head);
        let _ = write!(
            out,
            "{{\"index\":{index},\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\
             \"logprobs\":null,\"finish_reason\":null}}"
        );
        out.extend_from_slice(self.tail);
    }

    /// Content chunk `i` of choice `index`.
    pub(crate) fn content(&self, out: &mut Vec<u8>, plan: &Plan, index: u32, i: usize) {
        out.extend_from_slice(&self.head);
        let _ = write!(out, "{{\"index\":{index},");
        let output = &plan.output;
        match (plan.endpoint, output) {
            (Endpoint::Chat, Output::ToolCall { name, first_id, .. }) if i == 0 => {
                let id = first_id + u64::from(index);
                let _ = write!(
                    out,
                    "\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"call_{id}\",\
                     \"type\":\"function\",\"function\":{{\"name\":"
                );
                let _ = serde_json::to_writer(&mut *out, name);
                out.extend_from_slice(b",\"arguments\":\"\"}}]},\"logprobs\":null");
            }
            (Endpoint::Chat, Output::ToolCall { .. }) => {
                out.extend_from_slice(
                    b"\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":",
                );
                output.write_piece(i - 1, out);
                out.extend_from_slice(b"}}]},\"logprobs\":null");
            }
            (Endpoint::Chat, _) => {
                out.extend_from_slice(b"\"delta\":{\"content\":");
                output.write_piece(i, out);
                out.extend_from_slice(b"},\"logprobs\":");
                match plan.logprobs {
                    Some(k) => {
                        let entry = json!({"content": [chat_logprob(&output.piece(i), k)]});
                        let _ = serde_json::to_writer(&mut *out, &entry);
                    }
                    None => out.extend_from_slice(b"null"),
                }
            }
            (Endpoint::Text, _) => {
                out.extend_from_slice(b"\"text\":");
                output.write_piece(i, out);
                out.extend_from_slice(b",\"logprobs\":");
                match plan.logprobs {
                    Some(k) => {
                        let offset = (0..i).map(|j| output.piece(j).len()).sum();
                        let entry = text_logprobs(&[output.piece(i)], offset, k);
                        let _ = serde_json::to_writer(&mut *out, &entry);
                    }
                    None => out.extend_from_slice(b"null"),
                }
            }
        }
        out.extend_from_slice(b",\"finish_reason\":null}");
        out.extend_from_slice(self.tail);
    }

    /// The chunk that ends choice `index`.
    pub(crate) fn finish(&self, out: &mut Vec<u8>, plan: &Plan, index: u32) {
        out.extend_from_slice(&self.head);
        let empty = match plan.endpoint {
            Endpoint::Chat => "\"delta\":{}",
            Endpoint::Text => "\"text\":\"\"",
        };
        let _ = write!(
            out,
            "{{\"index\":{index},{empty},\"logprobs\":null,\"finish_reason\":\"{}\"}}",
            plan.finish
        );
        out.extend_from_slice(self.tail);
    }

    /// `stream_options.include_usage`: the chunk with no choices and the whole usage.
    pub(crate) fn usage(&self, out: &mut Vec<u8>, plan: &Plan) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"],\"usage\":");
        let _ = serde_json::to_writer(&mut *out, &usage(plan));
        out.extend_from_slice(b"}\n\n");
    }
}

pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";
pub(crate) const MALFORMED: &[u8] = b"data: {not json\n\n";
