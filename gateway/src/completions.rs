//! OpenAI's chat and text completion JSON ↔ `citadel.v1.CompletionService` messages. Fields
//! the contract types are checked here (a wrong type is a 400 naming the field); every other
//! field travels in `extra`, so vLLM's extensions reach the server unchanged.

use citadel_proto::{
    json::{from_struct, to_struct, to_value},
    v1::{
        ChatChunk, ChatMessage, ChatRequest, ChatResponse, CompleteChunk, CompleteRequest,
        CompleteResponse, CompletionUsage, ContentPart, FunctionCall, FunctionDefinition, Sampling,
        TextChoice, Tool, ToolCall,
    },
};
use serde_json::{Map, Value, json};

use crate::error::ApiError;

type Object = Map<String, Value>;

/// How the caller wants the answer.
pub(crate) struct Delivery {
    pub(crate) stream: bool,
    /// `stream_options.include_usage`: the usage chunk before `[DONE]`.
    pub(crate) include_usage: bool,
}

/// Reads `key` out of `body` (so what is left is the extras).
struct Fields(Object);

impl Fields {
    fn take(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid(key, format!("`{key}` must be a string"))),
        }
    }

    fn number(&mut self, key: &str) -> Result<Option<f64>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(ApiError::invalid(key, format!("`{key}` must be a number"))),
        }
    }

    fn uint(&mut self, key: &str) -> Result<Option<u32>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Ok(Some(n)),
                None => Err(ApiError::invalid(
                    key,
                    format!("`{key}` must be a non-negative integer"),
                )),
            },
            Some(_) => Err(ApiError::invalid(
                key,
                format!("`{key}` must be an integer"),
            )),
        }
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(ApiError::invalid(
                key,
                format!("`{key}` must be true or false"),
            )),
        }
    }

    fn object(&mut self, key: &str) -> Result<Option<Object>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(ApiError::invalid(key, format!("`{key}` must be an object"))),
        }
    }

    fn model(&mut self) -> Result<String, ApiError> {
        match self.string("model")? {
            Some(m) if !m.is_empty() => Ok(m),
            _ => Err(ApiError::invalid("model", "`model` is required")),
        }
    }

    fn sampling(&mut self) -> Result<Sampling, ApiError> {
        let stop = match self.take("stop") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(ApiError::invalid(
                        "stop",
                        "`stop` must be a string or strings",
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ApiError::invalid(
                    "stop",
                    "`stop` must be a string or strings",
                ));
            }
        };
        let seed = match self.take("seed") {
            None => None,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(_) => return Err(ApiError::invalid("seed", "`seed` must be an integer")),
        };
        Ok(Sampling {
            temperature: self.number("temperature")?,
            top_p: self.number("top_p")?,
            max_tokens: self.uint("max_tokens")?,
            stop,
            seed,
            presence_penalty: self.number("presence_penalty")?,
            frequency_penalty: self.number("frequency_penalty")?,
            n: self.uint("n")?,
            user: self.string("user")?,
        })
    }

    fn delivery(&mut self) -> Result<Delivery, ApiError> {
        let stream = self.bool("stream")?.unwrap_or(false);
        let mut options = self.object("stream_options")?.unwrap_or_default();
        let include_usage = match options.remove("include_usage").as_ref() {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                let msg = "`stream_options.include_usage` must be true or false";
                return Err(ApiError::invalid("stream_options", msg));
            }
        };
        // The rest (vLLM's `continuous_usage_stats`, ...) goes to the server as it came.
        if !options.is_empty() {
            self.0
                .insert("stream_options".into(), Value::Object(options));
        }
        Ok(Delivery {
            stream,
            include_usage,
        })
    }

    /// What no typed field took: passed to the server as it came.
    fn extra(self) -> Option<prost_types::Struct> {
        (!self.0.is_empty())
            .then(|| to_struct(&Value::Object(self.0)))
            .flatten()
    }
}

fn body_object(body: Value) -> Result<Fields, ApiError> {
    match body {
        Value::Object(o) => Ok(Fields(o)),
        _ => Err(ApiError::invalid(
            "",
            "the request body must be a JSON object",
        )),
    }
}

pub(crate) fn chat_request(body: Value) -> Result<(ChatRequest, Delivery), ApiError> {
    let mut f = body_object(body)?;
    let model = f.model()?;
    let messages = match f.take("messages") {
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(ApiError::invalid("messages", "`messages` must be an array")),
    };
    let tools = match f.take("tools") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, t)| tool(i, t))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::invalid("tools", "`tools` must be an array")),
    };
    let request = ChatRequest {
        model,
        messages,
        sampling: Some(f.sampling()?),
        max_completion_tokens: f.uint("max_completion_tokens")?,
        tools,
        tool_choice: f.take("tool_choice").map(|v| to_value(&v)),
        parallel_tool_calls: f.bool("parallel_tool_calls")?,
        response_format: f
            .object("response_format")?
            .and_then(|o| to_struct(&Value::Object(o))),
        logprobs: f.bool("logprobs")?,
        top_logprobs: f.uint("top_logprobs")?,
        extra: None,
        raw_chunks: false,
    };
    let delivery = f.delivery()?;
    Ok((
        ChatRequest {
            extra: f.extra(),
            ..request
        },
        delivery,
    ))
}

fn message(i: usize, value: Value) -> Result<ChatMessage, ApiError> {
    let param = format!("messages[{i}]");
    let Value::Object(o) = value else {
        return Err(ApiError::invalid(
            &param,
            format!("`{param}` must be an object"),
        ));
    };
    let mut f = Fields(o);
    let role = f.string("role")?.unwrap_or_default();
    let (content, parts) = match f.take("content") {
        None => (None, Vec::new()),
        Some(Value::String(s)) => (Some(s), Vec::new()),
        Some(Value::Array(items)) => {
            let parts = items
                .into_iter()
                .map(|p| part(&param, p))
                .collect::<Result<_, _>>()?;
            (None, parts)
        }
        Some(_) => {
            let msg = format!("`{param}.content` must be a string or an array of parts");
            return Err(ApiError::invalid(&format!("{param}.content"), msg));
        }
    };
    let tool_calls = match f.take("tool_calls") {
        None => Vec::new(),
        Some(Value::Array(calls)) => calls
            .iter()
            .enumerate()
            .map(|(j, c)| tool_call(&format!("{param}.tool_calls[{j}]"), c))
            .collect::<Result<_, _>>()?,
        Some(_) => {
            let msg = format!("`{param}.tool_calls` must be an array");
            return Err(ApiError::invalid(&format!("{param}.tool_calls"), msg));
        }
    };
    Ok(ChatMessage {
        role,
        content,
        parts,
        name: f.string("name")?,
        tool_calls,
        tool_call_id: f.string("tool_call_id")?,
        reasoning_content: None,
    })
}

fn part(param: &str, value: Value) -> Result<ContentPart, ApiError> {
    let Value::Object(o) = value else {
        let msg = format!("`{param}.content` parts must be objects");
        return Err(ApiError::invalid(&format!("{param}.content"), msg));
    };
    let kind = o
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match kind.as_str() {
        "text" => Ok(ContentPart {
            r#type: kind,
            text: o
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            raw: None,
        }),
        // Images, audio, files: the server decides whether it takes them.
        _ => Ok(ContentPart {
            r#type: kind,
            text: String::new(),
            raw: to_struct(&Value::Object(o)),
        }),
    }
}

fn tool_call(param: &str, value: &Value) -> Result<ToolCall, ApiError> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let function = value.get("function");
    let arguments = match function.and_then(|f| f.get("arguments")) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        // OpenAI's schema: the arguments are JSON *text*, as the model wrote them.
        Some(_) => {
            let msg = format!("`{param}.function.arguments` must be a string of JSON");
            return Err(ApiError::invalid(param, msg));
        }
    };
    Ok(ToolCall {
        id: text(value.get("id")),
        r#type: text(value.get("type")),
        function: Some(FunctionCall {
            name: text(function.and_then(|f| f.get("name"))),
            arguments,
        }),
    })
}

fn tool(i: usize, value: Value) -> Result<Tool, ApiError> {
    let param = format!("tools[{i}]");
    let function = value.get("function").and_then(Value::as_object);
    let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) else {
        let msg = format!("`{param}.function.name` is required");
        return Err(ApiError::invalid(&param, msg));
    };
    let function = function.cloned().unwrap_or_default();
    Ok(Tool {
        r#type: value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("function")
            .to_string(),
        function: Some(FunctionDefinition {
            name: name.to_string(),
            description: function
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters: function.get("parameters").and_then(to_struct),
            strict: function.get("strict").and_then(Value::as_bool),
        }),
    })
}

pub(crate) fn complete_request(body: Value) -> Result<(CompleteRequest, Delivery), ApiError> {
    let mut f = body_object(body)?;
    let model = f.model()?;
    let prompt = match f.take("prompt") {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => {
            items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        }
        _ => {
            let msg = "`prompt` must be a string or a non-empty array of strings";
            return Err(ApiError::invalid("prompt", msg));
        }
    };
    let request = CompleteRequest {
        model,
        prompt,
        sampling: Some(f.sampling()?),
        echo: f.bool("echo")?,
        suffix: f.string("suffix")?,
        logprobs: f.uint("logprobs")?,
        best_of: f.uint("best_of")?,
        extra: None,
        raw_chunks: false,
    };
    let delivery = f.delivery()?;
    Ok((
        CompleteRequest {
            extra: f.extra(),
            ..request
        },
        delivery,
    ))
}

fn usage_json(usage: Option<&CompletionUsage>) -> Value {
    match usage {
        Some(u) => {
            json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                          "total_tokens": u.total_tokens})
        }
        None => Value::Null,
    }
}

fn logprobs_json(l: Option<&prost_types::Struct>) -> Value {
    l.map_or(Value::Null, from_struct)
}

fn finish(reason: &str) -> Value {
    if reason.is_empty() {
        Value::Null
    } else {
        reason.into()
    }
}

fn message_json(m: Option<&ChatMessage>) -> Value {
    let Some(m) = m else {
        return json!({"role": "assistant", "content": null});
    };
    let mut out = json!({"role": m.role, "content": m.content});
    if let Some(reasoning) = &m.reasoning_content {
        out["reasoning_content"] = reasoning.clone().into();
    }
    if !m.tool_calls.is_empty() {
        out["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                let f = c.function.clone().unwrap_or_default();
                json!({"id": c.id, "type": c.r#type, "function": {"name": f.name, "arguments": f.arguments}})
            })
            .collect();
    }
    out
}

pub(crate) fn chat_response_json(r: &ChatResponse) -> Value {
    let choices: Vec<Value> = r
        .choices
        .iter()
        .map(|c| {
            json!({"index": c.index, "message": message_json(c.message.as_ref()),
                        "logprobs": logprobs_json(c.logprobs.as_ref()),
                        "finish_reason": finish(&c.finish_reason)})
        })
        .collect();
    let mut out = json!({"id": r.id, "object": "chat.completion", "created": r.created,
                         "model": r.model, "choices": choices,
                         "usage": usage_json(r.usage.as_ref())});
    if let Some(fp) = &r.system_fingerprint {
        out["system_fingerprint"] = fp.clone().into();
    }
    out
}

/// A stream chunk as OpenAI writes it; `usage` only when the caller asked for it.
pub(crate) fn chat_chunk_json(c: &ChatChunk, include_usage: bool) -> Value {
    let choices: Vec<Value> = c
        .choices
        .iter()
        .map(|choice| {
            let d = choice.delta.clone().unwrap_or_default();
            let mut delta = Map::new();
            if let Some(role) = d.role {
                delta.insert("role".into(), role.into());
            }
            if let Some(content) = d.content {
                delta.insert("content".into(), content.into());
            }
            if let Some(reasoning) = d.reasoning_content {
                delta.insert("reasoning_content".into(), reasoning.into());
            }
            if !d.tool_calls.is_empty() {
                let calls = d.tool_calls.iter().map(|t| {
                    let mut call = json!({"index": t.index});
                    if let Some(id) = &t.id {
                        call["id"] = id.clone().into();
                    }
                    if let Some(kind) = &t.r#type {
                        call["type"] = kind.clone().into();
                    }
                    let mut function = Map::new();
                    if let Some(name) = &t.name {
                        function.insert("name".into(), name.clone().into());
                    }
                    if let Some(arguments) = &t.arguments {
                        function.insert("arguments".into(), arguments.clone().into());
                    }
                    call["function"] = Value::Object(function);
                    call
                });
                delta.insert("tool_calls".into(), calls.collect());
            }
            json!({"index": choice.index, "delta": delta,
                   "logprobs": logprobs_json(choice.logprobs.as_ref()),
                   "finish_reason": finish(&choice.finish_reason)})
        })
        .collect();
    let mut out = json!({"id": c.id, "object": "chat.completion.chunk", "created": c.created,
                         "model": c.model, "choices": choices});
    if include_usage {
        out["usage"] = usage_json(c.usage.as_ref());
    }
    out
}

fn text_choices(choices: &[TextChoice]) -> Vec<Value> {
    choices
        .iter()
        .map(|c| {
            json!({"index": c.index, "text": c.text,
                        "logprobs": logprobs_json(c.logprobs.as_ref()),
                        "finish_reason": finish(&c.finish_reason)})
        })
        .collect()
}

pub(crate) fn complete_response_json(r: &CompleteResponse) -> Value {
    json!({"id": r.id, "object": "text_completion", "created": r.created, "model": r.model,
           "choices": text_choices(&r.choices), "usage": usage_json(r.usage.as_ref())})
}

pub(crate) fn complete_chunk_json(c: &CompleteChunk, include_usage: bool) -> Value {
    let mut out = json!({"id": c.id, "object": "text_completion", "created": c.created,
                         "model": c.model, "choices": text_choices(&c.choices)});
    if include_usage {
        out["usage"] = usage_json(c.usage.as_ref());
    }
    out
}
