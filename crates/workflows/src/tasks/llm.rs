//! `llm_batch` and `llm_chain`: background LLM work through `CompletionService`.
//!
//! - `llm_batch`: `model`; `prompts: [..]` (a string, or `{"id", "prompt"}` / `{"id",
//!   "messages"}`) or `input_file` (JSONL of the same); optional `system`, `max_tokens`,
//!   `temperature`, `concurrency` (1–32, default 4). Each item is one chat completion; progress
//!   after each. The answers so far are checkpointed, so a retried attempt does only the
//!   items that had not finished.
//! - `llm_chain`: `model`; `inputs: {name: text}`; `steps: [{"name", "prompt", "system"?,
//!   "model"?, "max_tokens"?, "temperature"?}]`, run in order; a prompt may use `{{inputs.x}}`
//!   and `{{steps.y}}` for an earlier step's answer. Each finished step is checkpointed.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use citadel_proto::v1::{
    ChatMessage, ChatRequest, Sampling, completion_service_client::CompletionServiceClient,
};
use futures_util::{StreamExt, stream};
use serde_json::{Map, Value as Json, json};
use tonic::Code;

use super::MeshTransport;

use super::{FileRoot, object};
use crate::{Task, TaskContext, TaskError};

#[derive(Clone)]
pub struct LlmSettings {
    pub client: CompletionServiceClient<MeshTransport>,
    pub files: FileRoot,
}

/// Items of one batch; larger jobs are split by the caller.
const MAX_ITEMS: usize = 10_000;
const MAX_CONCURRENCY: u64 = 32;
const MAX_STEPS: usize = 64;
/// One completion may take this long before the attempt gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest `input_file` read.
const MAX_INPUT_BYTES: u64 = 256 << 20;
/// A batch's answers so far are checkpointed at least this often.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);

pub struct LlmBatch(pub LlmSettings);
pub struct LlmChain(pub LlmSettings);

/// One completion's answer, as results and checkpoints hold it.
fn answer_json(index: usize, id: &Json, r: &citadel_proto::v1::ChatResponse) -> Json {
    let choice = r.choices.first();
    let content = choice
        .and_then(|c| c.message.as_ref())
        .and_then(|m| m.content.clone())
        .unwrap_or_default();
    let usage = r.usage.unwrap_or_default();
    json!({"index": index, "id": id, "content": content,
           "finish_reason": choice.map(|c| c.finish_reason.clone()).unwrap_or_default(),
           "model": r.model,
           "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}})
}

/// A failed call: the caller's input is permanent, an outage is worth another attempt.
fn call_error(status: tonic::Status) -> TaskError {
    let message = format!("completion failed: {}", status.message());
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::PermissionDenied => TaskError::permanent(message),
        _ => TaskError::retryable(message),
    }
}

async fn complete(
    client: &CompletionServiceClient<MeshTransport>,
    request: ChatRequest,
) -> Result<citadel_proto::v1::ChatResponse, TaskError> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(CALL_TIMEOUT);
    let mut client = client.clone();
    client
        .chat(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(call_error)
}

fn sampling(params: &Map<String, Json>) -> Sampling {
    Sampling {
        max_tokens: params
            .get("max_tokens")
            .and_then(Json::as_u64)
            .map(|n| n.min(u64::from(u32::MAX)) as u32),
        temperature: params.get("temperature").and_then(Json::as_f64),
        ..Sampling::default()
    }
}

fn message(role: &str, text: &str) -> ChatMessage {
    ChatMessage {
        role: role.to_string(),
        content: Some(text.to_string()),
        ..ChatMessage::default()
    }
}

fn optional_number(map: &Map<String, Json>, key: &str) -> Result<(), String> {
    match map.get(key) {
        None | Some(Json::Null) | Some(Json::Number(_)) => Ok(()),
        Some(_) => Err(format!("params.{key} must be a number")),
    }
}

fn required_string<'a>(map: &'a Map<String, Json>, key: &str, at: &str) -> Result<&'a str, String> {
    match map.get(key) {
        Some(Json::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(format!("{at}.{key} must be a non-empty string")),
    }
}

/// One batch item: its id (carried to the output) and the messages to send.
fn item(
    index: usize,
    value: &Json,
    system: Option<&str>,
) -> Result<(Json, Vec<ChatMessage>), String> {
    let at = format!("prompts[{index}]");
    let mut messages: Vec<ChatMessage> = system.map(|s| message("system", s)).into_iter().collect();
    let id = match value {
        Json::String(text) => {
            messages.push(message("user", text));
            Json::Null
        }
        Json::Object(o) => {
            match (o.get("prompt"), o.get("messages")) {
                (Some(Json::String(text)), None) => messages.push(message("user", text)),
                (None, Some(Json::Array(list))) => {
                    for (j, m) in list.iter().enumerate() {
                        let role = m.get("role").and_then(Json::as_str);
                        let content = m.get("content").and_then(Json::as_str);
                        match (role, content) {
                            (Some(r), Some(c)) => messages.push(message(r, c)),
                            _ => {
                                return Err(format!(
                                    "{at}.messages[{j}] needs a role and a string content"
                                ));
                            }
                        }
                    }
                }
                _ => {
                    return Err(format!(
                        "{at} needs a string `prompt` or a `messages` array"
                    ));
                }
            }
            o.get("id").cloned().unwrap_or(Json::Null)
        }
        _ => return Err(format!("{at} must be a string or an object")),
    };
    Ok((id, messages))
}

#[async_trait::async_trait]
impl Task for LlmBatch {
    fn kind(&self) -> &'static str {
        "llm_batch"
    }

    fn validate(&self, params: &Json) -> Result<(), String> {
        let map = object(self.kind(), params)?;
        required_string(map, "model", "params")?;
        optional_number(map, "max_tokens")?;
        optional_number(map, "temperature")?;
        if let Some(c) = map.get("concurrency") {
            match c.as_u64() {
                Some(1..=MAX_CONCURRENCY) => {}
                _ => return Err(format!("params.concurrency must be 1 to {MAX_CONCURRENCY}")),
            }
        }
        let system = map.get("system").and_then(Json::as_str);
        match (map.get("prompts"), map.get("input_file")) {
            (Some(Json::Array(items)), None) => {
                if items.is_empty() || items.len() > MAX_ITEMS {
                    return Err(format!("params.prompts must hold 1 to {MAX_ITEMS} prompts"));
                }
                for (i, value) in items.iter().enumerate() {
                    item(i, value, system).map_err(|e| format!("params.{e}"))?;
                }
                Ok(())
            }
            (None, Some(Json::String(path))) => FileRoot::check("input_file", path),
            _ => Err("params needs either `prompts` (an array) or `input_file` (a path)".into()),
        }
    }

    async fn run(&self, ctx: TaskContext) -> Result<Json, TaskError> {
        let params = object(self.kind(), &ctx.params)
            .map_err(TaskError::permanent)?
            .clone();
        let items = match params.get("input_file").and_then(Json::as_str) {
            Some(path) => read_items(&self.0.files, path).await?,
            None => params
                .get("prompts")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default(),
        };
        let model = params
            .get("model")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string();
        let system = params
            .get("system")
            .and_then(Json::as_str)
            .map(str::to_string);
        let concurrency = params
            .get("concurrency")
            .and_then(Json::as_u64)
            .unwrap_or(4) as usize;
        // What an earlier attempt finished: index -> answer.
        let mut done: BTreeMap<usize, Json> = ctx
            .checkpoint()
            .and_then(|c| c.get("done"))
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| Some((a.get("index")?.as_u64()? as usize, a.clone())))
            .collect();
        let total = items.len() as u64;
        let todo: Vec<(usize, Json, Vec<ChatMessage>)> = items
            .iter()
            .enumerate()
            .filter(|(i, _)| !done.contains_key(i))
            .map(|(i, v)| item(i, v, system.as_deref()).map(|(id, m)| (i, id, m)))
            .collect::<Result<_, _>>()
            .map_err(TaskError::permanent)?;
        let resumed = done.len();
        let sampling = sampling(&params);
        let client = &self.0.client;
        let mut answers = stream::iter(todo.into_iter().map(|(i, id, messages)| {
            let request = ChatRequest {
                model: model.clone(),
                messages,
                sampling: Some(sampling.clone()),
                ..ChatRequest::default()
            };
            async move {
                match complete(client, request).await {
                    Ok(r) => Ok(answer_json(i, &id, &r)),
                    // One prompt the server refuses (too long, a bad role) is that item's
                    // answer, as in OpenAI's batch API; an outage fails the attempt, and the
                    // retry resumes.
                    Err(e) if !e.retryable => Ok(json!({"index": i, "id": id, "error": e.message})),
                    Err(e) => Err(e),
                }
            }
        }))
        .buffer_unordered(concurrency.max(1));
        // The checkpoint is the answers so far, so it is written about 50 times per batch (and
        // at least every 2 s), not per item: per item, a long batch would write O(n^2) bytes.
        let every = (total / 50).max(1);
        let mut saved = Instant::now();
        while let Some(answer) = answers.next().await {
            let answer = answer?;
            let index = answer["index"].as_u64().unwrap_or(0) as usize;
            done.insert(index, answer);
            let finished = done.len() as u64;
            if finished.is_multiple_of(every) || saved.elapsed() >= CHECKPOINT_INTERVAL {
                ctx.save_checkpoint(&json!({"done": done.values().collect::<Vec<_>>()}))
                    .await;
                saved = Instant::now();
            }
            ctx.progress(finished, total, &format!("{finished}/{total} prompts"))
                .await;
        }
        let (mut prompt, mut completion) = (0u64, 0u64);
        for a in done.values() {
            prompt += a["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
            completion += a["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        }
        ctx.final_progress(total, total, &format!("{total}/{total} prompts"));
        let failed = done.values().filter(|a| a.get("error").is_some()).count();
        Ok(
            json!({"model": model, "count": total, "resumed": resumed, "failed": failed,
                  "results": done.into_values().collect::<Vec<_>>(),
                  "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}),
        )
    }
}

async fn read_items(files: &FileRoot, path: &str) -> Result<Vec<Json>, TaskError> {
    let path = files
        .resolve("input_file", path)
        .map_err(TaskError::permanent)?;
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|e| TaskError::permanent(format!("input_file {}: {e}", path.display())))?;
    if meta.len() > MAX_INPUT_BYTES {
        return Err(TaskError::permanent(format!(
            "input_file is over {MAX_INPUT_BYTES} bytes"
        )));
    }
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| TaskError::permanent(format!("input_file {}: {e}", path.display())))?;
    let items: Vec<Json> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| TaskError::permanent(format!("input_file line {}: {e}", i + 1)))
        })
        .collect::<Result<_, _>>()?;
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(TaskError::permanent(format!(
            "input_file must hold 1 to {MAX_ITEMS} prompts"
        )));
    }
    Ok(items)
}

/// `{{inputs.x}}` and `{{steps.y}}` replaced; an unknown name is an error naming it.
fn render(
    template: &str,
    inputs: &Map<String, Json>,
    steps: &Map<String, Json>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("a `{{` is never closed".into());
        };
        let name = after[..end].trim();
        let value = match name.split_once('.') {
            Some(("inputs", key)) => inputs.get(key),
            Some(("steps", key)) => steps.get(key),
            _ => None,
        };
        match value {
            Some(Json::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&other.to_string()),
            None => return Err(format!("`{{{{{name}}}}}` names no input or earlier step")),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[async_trait::async_trait]
impl Task for LlmChain {
    fn kind(&self) -> &'static str {
        "llm_chain"
    }

    fn validate(&self, params: &Json) -> Result<(), String> {
        let map = object(self.kind(), params)?;
        let inputs = match map.get("inputs") {
            None => Map::new(),
            Some(Json::Object(o)) => o.clone(),
            Some(_) => return Err("params.inputs must be an object".into()),
        };
        let Some(Json::Array(steps)) = map.get("steps") else {
            return Err("params.steps must be an array of steps".into());
        };
        if steps.is_empty() || steps.len() > MAX_STEPS {
            return Err(format!("params.steps must hold 1 to {MAX_STEPS} steps"));
        }
        // Placeholders stand for what earlier steps will answer.
        let mut seen = Map::new();
        for (i, step) in steps.iter().enumerate() {
            let at = format!("params.steps[{i}]");
            let step = step
                .as_object()
                .ok_or_else(|| format!("{at} must be an object"))?;
            let name = required_string(step, "name", &at)?;
            let prompt = required_string(step, "prompt", &at)?;
            if step.get("model").is_none() {
                required_string(map, "model", "params")
                    .map_err(|_| format!("{at} needs a `model`, or params a default `model`"))?;
            }
            render(prompt, &inputs, &seen).map_err(|e| format!("{at}.prompt: {e}"))?;
            if seen
                .insert(name.to_string(), Json::String(String::new()))
                .is_some()
            {
                return Err(format!("{at}.name `{name}` is used twice"));
            }
        }
        Ok(())
    }

    async fn run(&self, ctx: TaskContext) -> Result<Json, TaskError> {
        let params = object(self.kind(), &ctx.params)
            .map_err(TaskError::permanent)?
            .clone();
        let inputs = params
            .get("inputs")
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        let steps = params
            .get("steps")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        let default_model = params
            .get("model")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let mut outputs: Map<String, Json> = ctx
            .checkpoint()
            .and_then(|c| c.get("outputs"))
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        let resumed = outputs.len();
        let total = steps.len() as u64;
        let mut last = Json::Null;
        for (i, step) in steps.iter().enumerate() {
            let step = step.as_object().cloned().unwrap_or_default();
            let name = step
                .get("name")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(done) = outputs.get(&name) {
                last = done.clone();
                continue;
            }
            let template = step
                .get("prompt")
                .and_then(Json::as_str)
                .unwrap_or_default();
            let prompt = render(template, &inputs, &outputs).map_err(TaskError::permanent)?;
            let mut messages: Vec<ChatMessage> = step
                .get("system")
                .and_then(Json::as_str)
                .map(|s| message("system", s))
                .into_iter()
                .collect();
            messages.push(message("user", &prompt));
            let request = ChatRequest {
                model: step
                    .get("model")
                    .and_then(Json::as_str)
                    .unwrap_or(default_model)
                    .to_string(),
                messages,
                sampling: Some(sampling(&step)),
                ..ChatRequest::default()
            };
            let answer = complete(&self.0.client, request).await?;
            let text = answer_json(i, &Json::Null, &answer)["content"].clone();
            outputs.insert(name.clone(), text.clone());
            last = text;
            ctx.save_checkpoint(&json!({"outputs": outputs})).await;
            let done = i as u64 + 1;
            ctx.progress(done, total, &format!("step {done}/{total}: {name}"))
                .await;
        }
        ctx.final_progress(total, total, "chain finished");
        Ok(json!({"outputs": outputs, "final": last, "resumed_steps": resumed}))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn templates_use_inputs_and_earlier_steps_only() {
        let inputs = json!({"topic": "rust"}).as_object().cloned().unwrap();
        let steps = json!({"outline": "1. a"}).as_object().cloned().unwrap();
        assert_eq!(
            render(
                "write {{ inputs.topic }} from {{steps.outline}}",
                &inputs,
                &steps
            )
            .unwrap(),
            "write rust from 1. a"
        );
        assert!(
            render("{{steps.later}}", &inputs, &steps)
                .unwrap_err()
                .contains("steps.later")
        );
        assert!(render("{{inputs.topic", &inputs, &steps).is_err());
    }
}
