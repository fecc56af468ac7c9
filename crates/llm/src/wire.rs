//! The OpenAI-compatible wire format of chat and text completions, as vLLM speaks it: requests
//! built from the contract's messages (typed fields over `extra`, so a typed field always
//! wins), and answers and stream chunks read back into them.

use citadel_proto::{
    json::{from_struct, from_value, to_struct},
    v1::{
        ChatChoice, ChatChunk, ChatChunkChoice, ChatDelta, ChatMessage, ChatRequest, ChatResponse,
        CompleteChunk, CompleteRequest, CompleteResponse, CompletionUsage, FunctionCall, Sampling,
        TextChoice, ToolCall, ToolCallDelta,
    },
};
use serde_json::{Map, Value, json};

type Object = Map<String, Value>;

/// The body of `POST /v1/chat/completions`.
pub(crate) fn chat_body(request: &ChatRequest, model: &str, stream: bool) -> Vec<u8> {
    let mut body = extras(request.extra.as_ref());
    body.insert("model".into(), model.into());
    let messages = request.messages.iter().map(message_json).collect();
    body.insert("messages".into(), Value::Array(messages));
    sampling(&mut body, request.sampling.as_ref());
    put(
        &mut body,
        "max_completion_tokens",
        request.max_completion_tokens,
    );
    if !request.tools.is_empty() {
        let tools = request.tools.iter().map(|t| {
            let f = t.function.clone().unwrap_or_default();
            let mut function = Object::new();
            function.insert("name".into(), f.name.into());
            put(&mut function, "description", f.description);
            if let Some(p) = &f.parameters {
                function.insert("parameters".into(), from_struct(p));
            }
            put(&mut function, "strict", f.strict);
            json!({"type": or(&t.r#type, "function"), "function": function})
        });
        body.insert("tools".into(), tools.collect());
    }
    if let Some(choice) = &request.tool_choice {
        body.insert("tool_choice".into(), from_value(choice));
    }
    put(
        &mut body,
        "parallel_tool_calls",
        request.parallel_tool_calls,
    );
    if let Some(format) = &request.response_format {
        body.insert("response_format".into(), from_struct(format));
    }
    put(&mut body, "logprobs", request.logprobs);
    put(&mut body, "top_logprobs", request.top_logprobs);
    streaming(&mut body, stream);
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The body of `POST /v1/completions`.
pub(crate) fn complete_body(request: &CompleteRequest, model: &str, stream: bool) -> Vec<u8> {
    let mut body = extras(request.extra.as_ref());
    body.insert("model".into(), model.into());
    let prompt = match request.prompt.as_slice() {
        [one] => Value::from(one.as_str()),
        many => many.iter().map(|p| Value::from(p.as_str())).collect(),
    };
    body.insert("prompt".into(), prompt);
    sampling(&mut body, request.sampling.as_ref());
    put(&mut body, "echo", request.echo);
    put(&mut body, "suffix", request.suffix.clone());
    put(&mut body, "logprobs", request.logprobs);
    put(&mut body, "best_of", request.best_of);
    streaming(&mut body, stream);
    serde_json::to_vec(&body).unwrap_or_default()
}

fn extras(extra: Option<&prost_types::Struct>) -> Object {
    match extra.map(from_struct) {
        Some(Value::Object(map)) => map,
        _ => Object::new(),
    }
}

/// Usage is always asked for, so every stream's tokens are counted; the edge drops the usage
/// chunk for a client that did not ask.
fn streaming(body: &mut Object, stream: bool) {
    body.insert("stream".into(), stream.into());
    if stream {
        let mut options = match body.remove("stream_options") {
            Some(Value::Object(o)) => o,
            _ => Object::new(),
        };
        options.insert("include_usage".into(), true.into());
        body.insert("stream_options".into(), Value::Object(options));
    } else {
        body.remove("stream_options");
    }
}

fn sampling(body: &mut Object, sampling: Option<&Sampling>) {
    let Some(s) = sampling else { return };
    put(body, "temperature", s.temperature);
    put(body, "top_p", s.top_p);
    put(body, "max_tokens", s.max_tokens);
    if !s.stop.is_empty() {
        body.insert("stop".into(), s.stop.clone().into());
    }
    put(body, "seed", s.seed);
    put(body, "presence_penalty", s.presence_penalty);
    put(body, "frequency_penalty", s.frequency_penalty);
    put(body, "n", s.n);
    put(body, "user", s.user.clone());
}

fn put<T: Into<Value>>(body: &mut Object, key: &str, value: Option<T>) {
    if let Some(v) = value {
        body.insert(key.into(), v.into());
    }
}

fn or<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

fn message_json(m: &ChatMessage) -> Value {
    let mut out = Object::new();
    out.insert("role".into(), m.role.clone().into());
    let content = match (&m.content, m.parts.is_empty()) {
        (Some(text), _) => Value::from(text.as_str()),
        (None, false) => m
            .parts
            .iter()
            .map(|p| match &p.raw {
                Some(raw) => from_struct(raw),
                None => json!({"type": or(&p.r#type, "text"), "text": p.text}),
            })
            .collect(),
        (None, true) => Value::Null,
    };
    out.insert("content".into(), content);
    put(&mut out, "name", m.name.clone());
    if !m.tool_calls.is_empty() {
        let calls = m.tool_calls.iter().map(|c| {
            let f = c.function.clone().unwrap_or_default();
            json!({"id": c.id, "type": or(&c.r#type, "function"),
                   "function": {"name": f.name, "arguments": f.arguments}})
        });
        out.insert("tool_calls".into(), calls.collect());
    }
    put(&mut out, "tool_call_id", m.tool_call_id.clone());
    Value::Object(out)
}

/// A parsed answer or chunk, or why it is unusable.
pub(crate) type Parsed<T> = Result<T, String>;

fn object(body: &[u8]) -> Parsed<Object> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err("answered JSON that is not an object".into()),
        Err(e) => Err(format!("answered malformed JSON ({e})")),
    }
}

/// The error an in-band `{"error": {...}}` event carries (vLLM sends one when generation
/// fails mid-stream): its HTTP-style code (500 when it gives none) and message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InBand {
    pub(crate) code: u16,
    pub(crate) message: String,
}

fn in_band_error(o: &Object) -> Option<InBand> {
    let error = o.get("error")?.as_object()?;
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| Value::Object(error.clone()).to_string(), str::to_string);
    let code = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c))
        .unwrap_or(500);
    Some(InBand {
        code,
        message: message.chars().take(200).collect(),
    })
}

fn text(o: &Object, key: &str) -> String {
    o.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn opt_text(o: &Object, key: &str) -> Option<String> {
    o.get(key).and_then(Value::as_str).map(str::to_string)
}

fn uint(o: &Object, key: &str) -> u32 {
    let n = o.get(key).and_then(Value::as_u64).unwrap_or(0);
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn choices(o: &Object) -> Parsed<&Vec<Value>> {
    o.get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| "answered without `choices`".to_string())
}

fn as_object(v: &Value) -> Parsed<&Object> {
    v.as_object()
        .ok_or_else(|| "answered a choice that is not an object".to_string())
}

fn usage(o: &Object) -> Option<CompletionUsage> {
    let u = o.get("usage")?.as_object()?;
    Some(CompletionUsage {
        prompt_tokens: uint(u, "prompt_tokens"),
        completion_tokens: uint(u, "completion_tokens"),
        total_tokens: uint(u, "total_tokens"),
    })
}

fn logprobs(o: &Object) -> Option<prost_types::Struct> {
    o.get("logprobs").and_then(to_struct)
}

fn created(o: &Object) -> i64 {
    o.get("created").and_then(Value::as_i64).unwrap_or(0)
}

fn tool_calls(m: &Object) -> Vec<ToolCall> {
    let calls = m.get("tool_calls").and_then(Value::as_array);
    calls
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|c| {
            let f = c.get("function").and_then(Value::as_object);
            ToolCall {
                id: text(c, "id"),
                r#type: text(c, "type"),
                function: f.map(|f| FunctionCall {
                    name: text(f, "name"),
                    arguments: text(f, "arguments"),
                }),
            }
        })
        .collect()
}

pub(crate) fn chat_response(body: &[u8]) -> Parsed<ChatResponse> {
    let o = object(body)?;
    let choices = choices(&o)?
        .iter()
        .map(|c| {
            let c = as_object(c)?;
            let m = c.get("message").and_then(Value::as_object);
            let message = m.map(|m| ChatMessage {
                role: text(m, "role"),
                content: opt_text(m, "content"),
                tool_calls: tool_calls(m),
                reasoning_content: opt_text(m, "reasoning_content"),
                ..ChatMessage::default()
            });
            Ok(ChatChoice {
                index: uint(c, "index"),
                message,
                finish_reason: text(c, "finish_reason"),
                logprobs: logprobs(c),
            })
        })
        .collect::<Parsed<_>>()?;
    Ok(ChatResponse {
        id: text(&o, "id"),
        created: created(&o),
        model: text(&o, "model"),
        choices,
        usage: usage(&o),
        server: String::new(),
        system_fingerprint: opt_text(&o, "system_fingerprint"),
    })
}

/// One stream chunk, or the in-band error it carries (`Ok(Err(message))`).
pub(crate) fn chat_chunk(data: &str) -> Parsed<Result<ChatChunk, InBand>> {
    let o = object(data.as_bytes())?;
    if let Some(error) = in_band_error(&o) {
        return Ok(Err(error));
    }
    let choices = choices(&o)?
        .iter()
        .map(|c| {
            let c = as_object(c)?;
            let d = c.get("delta").and_then(Value::as_object);
            let delta = d.map(|d| ChatDelta {
                role: opt_text(d, "role"),
                content: opt_text(d, "content"),
                reasoning_content: opt_text(d, "reasoning_content"),
                tool_calls: tool_call_deltas(d),
            });
            Ok(ChatChunkChoice {
                index: uint(c, "index"),
                delta,
                finish_reason: text(c, "finish_reason"),
                logprobs: logprobs(c),
            })
        })
        .collect::<Parsed<_>>()?;
    Ok(Ok(ChatChunk {
        id: text(&o, "id"),
        created: created(&o),
        model: text(&o, "model"),
        choices,
        usage: usage(&o),
        server: String::new(),
        raw_json: Vec::new(),
    }))
}

fn tool_call_deltas(d: &Object) -> Vec<ToolCallDelta> {
    let calls = d.get("tool_calls").and_then(Value::as_array);
    calls
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|c| {
            let f = c.get("function").and_then(Value::as_object);
            ToolCallDelta {
                index: uint(c, "index"),
                id: opt_text(c, "id"),
                r#type: opt_text(c, "type"),
                name: f.and_then(|f| opt_text(f, "name")),
                arguments: f.and_then(|f| opt_text(f, "arguments")),
            }
        })
        .collect()
}

fn text_choices(o: &Object) -> Parsed<Vec<TextChoice>> {
    choices(o)?
        .iter()
        .map(|c| {
            let c = as_object(c)?;
            Ok(TextChoice {
                index: uint(c, "index"),
                text: text(c, "text"),
                finish_reason: text(c, "finish_reason"),
                logprobs: logprobs(c),
            })
        })
        .collect()
}

pub(crate) fn complete_response(body: &[u8]) -> Parsed<CompleteResponse> {
    let o = object(body)?;
    Ok(CompleteResponse {
        id: text(&o, "id"),
        created: created(&o),
        model: text(&o, "model"),
        choices: text_choices(&o)?,
        usage: usage(&o),
        server: String::new(),
    })
}

pub(crate) fn complete_chunk(data: &str) -> Parsed<Result<CompleteChunk, InBand>> {
    let o = object(data.as_bytes())?;
    if let Some(error) = in_band_error(&o) {
        return Ok(Err(error));
    }
    Ok(Ok(CompleteChunk {
        id: text(&o, "id"),
        created: created(&o),
        model: text(&o, "model"),
        choices: text_choices(&o)?,
        usage: usage(&o),
        server: String::new(),
        raw_json: Vec::new(),
    }))
}

/// A chunk to pass on as it came (`raw_chunks`): checked to be JSON without building it, its
/// usage read only when it has one, its in-band error detected. The cheap path: a stream of
/// 64 chunks would otherwise be parsed, rebuilt and printed again 64 times.
pub(crate) fn raw_chunk(data: &str) -> Parsed<Result<Option<CompletionUsage>, InBand>> {
    let has = |key: &str| data.contains(key);
    if has("\"error\"") || has("\"usage\":{") || has("\"usage\": {") {
        let o = object(data.as_bytes())?;
        if let Some(error) = in_band_error(&o) {
            return Ok(Err(error));
        }
        return Ok(Ok(usage(&o)));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(data)
        .map_err(|e| format!("answered malformed JSON ({e})"))?;
    if !data.trim_start().starts_with('{') {
        return Err("answered JSON that is not an object".into());
    }
    Ok(Ok(None))
}
