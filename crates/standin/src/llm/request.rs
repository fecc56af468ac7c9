//! From a request body to a [`Plan`]: what to answer, validated as vLLM validates it. Fields the
//! stand-in does not know (vLLM's extensions) are ignored, never refused.

use std::sync::atomic::Ordering;

use serde_json::Value;

use super::{Shared, render::ApiError};

/// Characters per streamed piece of tool arguments or JSON output.
const PIECE: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Text,
}

/// What one request is answered with; every choice gets the same output.
pub(crate) struct Plan {
    pub(crate) endpoint: Endpoint,
    /// Echoed back as the request spelt it.
    pub(crate) model: String,
    pub(crate) model_index: usize,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) choices: u32,
    pub(crate) output: Output,
    pub(crate) finish: &'static str,
    pub(crate) prompt_tokens: u32,
    /// Per choice.
    pub(crate) completion_tokens: u32,
    /// `Some(k)`: logprobs were asked for, with `k` top alternatives.
    pub(crate) logprobs: Option<u32>,
}

pub(crate) enum Output {
    /// `tok{i} ` (or `s{seed}t{i} `), one chunk each.
    Tokens { seed: Option<i64>, count: u32 },
    /// Literal pieces, one chunk each (JSON output, a tool result).
    Pieces(Vec<String>),
    /// A tool call: a chunk naming it, then the arguments in pieces. Choice `c` has id
    /// `call_{first_id + c}`.
    ToolCall {
        name: String,
        arguments: Vec<String>,
        first_id: u64,
    },
}

impl Output {
    /// Content chunks per choice.
    pub(crate) fn chunks(&self) -> usize {
        match self {
            Output::Tokens { count, .. } => *count as usize,
            Output::Pieces(pieces) => pieces.len(),
            Output::ToolCall { arguments, .. } => 1 + arguments.len(),
        }
    }

    /// The text of content piece `i` (for a tool call: of argument piece `i`).
    pub(crate) fn piece(&self, i: usize) -> String {
        match self {
            Output::Tokens { seed, .. } => token(*seed, i),
            Output::Pieces(pieces) => pieces.get(i).cloned().unwrap_or_default(),
            Output::ToolCall { arguments, .. } => arguments.get(i).cloned().unwrap_or_default(),
        }
    }

    /// Piece `i` as a JSON string literal, written straight into a chunk.
    pub(crate) fn write_piece(&self, i: usize, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = match self {
            Output::Tokens { seed: None, .. } => write!(out, "\"tok{i} \""),
            Output::Tokens { seed: Some(s), .. } => write!(out, "\"s{s}t{i} \""),
            Output::Pieces(pieces)
            | Output::ToolCall {
                arguments: pieces, ..
            } => serde_json::to_writer(out, pieces.get(i).map_or("", String::as_str))
                .map_err(std::io::Error::other),
        };
    }

    /// The whole content (for a tool call: the whole arguments text).
    pub(crate) fn text(&self) -> String {
        match self {
            Output::Tokens { count, .. } => (0..*count as usize).map(|i| self.piece(i)).collect(),
            Output::Pieces(pieces) => pieces.concat(),
            Output::ToolCall { arguments, .. } => arguments.concat(),
        }
    }
}

fn bad(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
    ApiError::new(400, message, param)
}

pub(crate) fn plan(
    endpoint: Endpoint,
    body: &Value,
    shared: &Shared,
    tokens: u32,
) -> Result<Plan, ApiError> {
    let Some(body) = body.as_object() else {
        return Err(bad("the request body must be a JSON object", None));
    };
    let models = &shared.config.models;
    let model = match body.get("model") {
        None | Some(Value::Null) => models.first().map(|m| m.id.clone()).unwrap_or_default(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("model must be a string", Some("model"))),
    };
    let Some(model_index) = models.iter().position(|m| m.id == model) else {
        return Err(ApiError::new(
            404,
            format!("The model `{model}` does not exist."),
            Some("model"),
        ));
    };
    let max_model_len = models[model_index].max_model_len;

    let requested = uint(body.get("max_completion_tokens"), "max_completion_tokens")?
        .or(uint(body.get("max_tokens"), "max_tokens")?);
    let n = uint(body.get("n"), "n")?.unwrap_or(1);
    if n == 0 {
        return Err(bad("n must be at least 1, got 0.", Some("n")));
    }
    let seed = body.get("seed").and_then(Value::as_i64);
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = stream
        && body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
    let json_output = matches!(
        body.get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str),
        Some("json_object" | "json_schema")
    );

    let Prompt {
        count: prompts,
        longest,
        total: prompt_tokens,
        rule,
    } = match endpoint {
        Endpoint::Chat => chat(body)?,
        Endpoint::Text => text(body)?,
    };
    let output_tokens = requested.unwrap_or(tokens);
    if longest.saturating_add(output_tokens) > max_model_len {
        let total = longest.saturating_add(output_tokens);
        return Err(bad(
            format!(
                "This model's maximum context length is {max_model_len} tokens. However, you \
                 requested {output_tokens} output tokens and your prompt contains at least \
                 {longest} input tokens, for a total of at least {total} tokens. Please reduce \
                 the length of the input prompt or the number of requested output tokens. \
                 (parameter=input_tokens, value={longest})"
            ),
            Some("input_tokens"),
        ));
    }

    let count = requested.map_or(tokens, |max| max.min(tokens));
    let length = if requested.is_some_and(|max| max < tokens) {
        "length"
    } else {
        "stop"
    };
    let choices = prompts.saturating_mul(n);
    let (output, finish, completion_tokens) = match rule {
        Rule::ToolCall { name, input } => {
            let arguments = tool_arguments(&input);
            let arguments = pieces(&arguments);
            let first_id = shared
                .counters
                .tool_calls
                .fetch_add(u64::from(choices), Ordering::Relaxed);
            let spent = arguments.len() as u32;
            let call = Output::ToolCall {
                name,
                arguments,
                first_id,
            };
            (call, "tool_calls", spent)
        }
        Rule::ToolResult(result) => (
            Output::Pieces(vec![format!("tool result: {result} ")]),
            "stop",
            1,
        ),
        Rule::Generate if json_output => {
            let words: Vec<String> = (0..count as usize)
                .map(|i| format!("\"{}\"", token(seed, i).trim_end()))
                .collect();
            let json = format!("{{\"tokens\": [{}]}}", words.join(", "));
            (Output::Pieces(pieces(&json)), length, count)
        }
        Rule::Generate => (Output::Tokens { seed, count }, length, count),
    };
    let logprobs = match (endpoint, body.get("logprobs")) {
        (Endpoint::Chat, Some(Value::Bool(true))) => {
            Some(uint(body.get("top_logprobs"), "top_logprobs")?.unwrap_or(0))
        }
        (Endpoint::Text, Some(Value::Number(k))) => k.as_u64().map(|k| k.min(20) as u32),
        _ => None,
    };
    Ok(Plan {
        endpoint,
        model,
        model_index,
        stream,
        include_usage,
        choices,
        output,
        finish,
        prompt_tokens,
        completion_tokens,
        logprobs,
    })
}

/// How the answer is chosen, by the deterministic tool rule.
enum Rule {
    Generate,
    ToolCall { name: String, input: String },
    ToolResult(String),
}

/// The prompts of one request, in the stand-in's tokens.
struct Prompt {
    count: u32,
    longest: u32,
    total: u32,
    rule: Rule,
}

/// Chat: one prompt, over every message, and the tool rule.
fn chat(body: &serde_json::Map<String, Value>) -> Result<Prompt, ApiError> {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err(bad("messages: Field required", Some("messages")));
    };
    let prompt_tokens = messages
        .iter()
        .map(|m| words(&content_text(m.get("content"))))
        .sum();
    let last = messages.last();
    let role = last.and_then(|m| m.get("role")).and_then(Value::as_str);
    let last_text = content_text(last.and_then(|m| m.get("content")));
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty());
    let choice = body.get("tool_choice");
    let rule = match (role, tools) {
        (Some("user"), Some(tools)) if choice.and_then(Value::as_str) != Some("none") => {
            let name_of = |t: &Value| {
                t.get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let named = choice
                .and_then(|c| c.get("function"))
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map(str::to_string);
            // A tool the user's text names, as a model reads "use lookup ...".
            let mentioned = tools
                .iter()
                .filter_map(name_of)
                .find(|n| !n.is_empty() && last_text.contains(n.as_str()));
            // `auto` leaves the choice to the model: only a named tool is called. Otherwise
            // (absent or `required`) the first tool is.
            let auto = choice.and_then(Value::as_str) == Some("auto");
            let fallback = (!auto).then(|| tools.first().and_then(name_of)).flatten();
            match named.or(mentioned).or(fallback) {
                Some(name) => Rule::ToolCall {
                    name,
                    input: last_text,
                },
                None => Rule::Generate,
            }
        }
        (Some("tool"), _) => Rule::ToolResult(last_text),
        _ => Rule::Generate,
    };
    Ok(Prompt {
        count: 1,
        longest: prompt_tokens,
        total: prompt_tokens,
        rule,
    })
}

/// Text completions: a string or several, each checked against the context on its own.
fn text(body: &serde_json::Map<String, Value>) -> Result<Prompt, ApiError> {
    let prompts = prompt_list(body.get("prompt"))?;
    let lengths = prompts.iter().map(|p| words(p));
    Ok(Prompt {
        count: prompts.len() as u32,
        longest: lengths.clone().max().unwrap_or(0),
        total: lengths.sum(),
        rule: Rule::Generate,
    })
}

fn prompt_list(prompt: Option<&Value>) -> Result<Vec<&str>, ApiError> {
    let invalid = || {
        bad(
            "prompt must be a string or an array of strings",
            Some("prompt"),
        )
    };
    match prompt {
        None => Err(bad("prompt: Field required", Some("prompt"))),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().ok_or_else(invalid))
            .collect(),
        Some(_) => Err(invalid()),
    }
}

/// A message's text: a string, or the `text` parts of an array of parts.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A tool call's arguments: the JSON object the text holds (first `{` to last `}`), else
/// `{"input": text}`.
fn tool_arguments(text: &str) -> String {
    let embedded = match (text.find('{'), text.rfind('}')) {
        (Some(start), Some(end)) if start < end => {
            serde_json::from_str::<serde_json::Map<String, Value>>(&text[start..=end]).ok()
        }
        _ => None,
    };
    match embedded {
        Some(object) => Value::Object(object).to_string(),
        None => format!("{{\"input\": {}}}", Value::String(text.to_string())),
    }
}

/// Generated token `i`.
fn token(seed: Option<i64>, i: usize) -> String {
    match seed {
        None => format!("tok{i} "),
        Some(s) => format!("s{s}t{i} "),
    }
}

/// The stand-in's tokenizer: whitespace-separated words.
fn words(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

fn uint(value: Option<&Value>, name: &'static str) -> Result<Option<u32>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(u32::try_from(n).unwrap_or(u32::MAX)))
            .ok_or_else(|| {
                bad(
                    format!("{name}: Input should be a valid non-negative integer"),
                    Some(name),
                )
            }),
    }
}

/// `text` in pieces of about [`PIECE`] characters, split on character boundaries.
fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(PIECE)
        .map(|chunk| chunk.iter().collect())
        .collect()
}
