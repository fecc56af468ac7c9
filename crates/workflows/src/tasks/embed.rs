//! `embed_batch` and `cache_warm`: texts (inline, or a JSONL file of records) embedded through
//! `EmbeddingService` a chunk at a time, with progress after each chunk. `embed_batch` returns
//! the vectors (or writes them to a JSONL file); `cache_warm` only makes the cache hold them.
//!
//! Parameters: `model`; `texts: [..]` or `input_file` (JSONL: a string, or an object whose
//! `text_field`, default `text`, holds the text; an `id` field is carried to the output);
//! optional `dimensions`, `normalize`, `prompt_name`; `embed_batch` also `output_file`.

use std::{path::PathBuf, time::Duration};

use citadel_proto::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use serde_json::{Map, Value as Json, json};
use tokio::io::AsyncWriteExt;

use super::MeshTransport;

use super::{FileRoot, files::io_error};
use crate::{Task, TaskContext, TaskError};

/// What both kinds need: the service, the chunk size, and the directory files live in.
#[derive(Clone)]
pub struct EmbedSettings {
    pub client: EmbeddingServiceClient<MeshTransport>,
    pub chunk_size: usize,
    pub files: FileRoot,
}

/// Inline texts and results are bounded; larger jobs go through files.
const MAX_INLINE_TEXTS: usize = 2_048;
/// Inline results hold at most this many numbers (2,048 texts of 1,024 dimensions, about 20 MB
/// of JSON), so a Get always fits in a gRPC message; larger jobs give `output_file`.
const MAX_INLINE_VALUES: usize = 2_048 * 1_024;
/// One chunk's call may take this long (a cold model, a slow upstream).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

pub struct EmbedBatch(pub EmbedSettings);
pub struct CacheWarm(pub EmbedSettings);

#[async_trait::async_trait]
impl Task for EmbedBatch {
    fn kind(&self) -> &'static str {
        "embed_batch"
    }

    fn validate(&self, params: &Json) -> Result<(), String> {
        let map = validate_common(self.kind(), params)?;
        match map.get("output_file") {
            None | Some(Json::Null) => Ok(()),
            Some(Json::String(path)) => FileRoot::check("output_file", path),
            Some(_) => Err("params.output_file must be a string".into()),
        }
    }

    async fn run(&self, ctx: TaskContext) -> Result<Json, TaskError> {
        let output = match ctx.params.get("output_file").and_then(Json::as_str) {
            Some(path) => Some(
                self.0
                    .files
                    .resolve("output_file", path)
                    .map_err(TaskError::permanent)?,
            ),
            None => None,
        };
        let mut sink = match output {
            Some(path) => Sink::file(path, &ctx.workflow_id).await?,
            None => Sink::Inline(Vec::new()),
        };
        let mut summary = embed_all(&self.0, &ctx, &mut sink).await?;
        match sink {
            Sink::Inline(vectors) => {
                summary.insert("embeddings".into(), json!(vectors));
            }
            Sink::File { path, temp, writer } => {
                finish_file(writer, temp, &path).await?;
                summary.insert("output_file".into(), json!(ctx.params["output_file"]));
            }
            Sink::Discard => {}
        }
        Ok(Json::Object(summary))
    }
}

#[async_trait::async_trait]
impl Task for CacheWarm {
    fn kind(&self) -> &'static str {
        "cache_warm"
    }

    fn validate(&self, params: &Json) -> Result<(), String> {
        validate_common(self.kind(), params).map(|_| ())
    }

    async fn run(&self, ctx: TaskContext) -> Result<Json, TaskError> {
        let summary = embed_all(&self.0, &ctx, &mut Sink::Discard).await?;
        Ok(Json::Object(summary))
    }
}

fn validate_common<'a>(kind: &str, params: &'a Json) -> Result<&'a Map<String, Json>, String> {
    let map = super::object(kind, params)?;
    match map.get("model") {
        Some(Json::String(m)) if !m.is_empty() => {}
        _ => return Err("params.model must name an embedding model".into()),
    }
    match (map.get("texts"), map.get("input_file")) {
        (Some(Json::Array(texts)), None) => {
            if texts.is_empty() || texts.len() > MAX_INLINE_TEXTS {
                return Err(format!(
                    "params.texts must hold 1 to {MAX_INLINE_TEXTS} texts (use input_file for more)"
                ));
            }
            if let Some(i) = texts.iter().position(|t| !t.is_string()) {
                return Err(format!("params.texts[{i}] must be a string"));
            }
        }
        (None, Some(Json::String(path))) => FileRoot::check("input_file", path)?,
        _ => {
            return Err("params must have either texts (an array of strings) or input_file".into());
        }
    }
    for key in ["text_field", "prompt_name"] {
        if map.get(key).is_some_and(|v| !v.is_string()) {
            return Err(format!("params.{key} must be a string"));
        }
    }
    if map
        .get("dimensions")
        .is_some_and(|v| v.as_u64().is_none_or(|d| d == 0 || d > 65_536))
    {
        return Err("params.dimensions must be a positive whole number".into());
    }
    if map.get("normalize").is_some_and(|v| !v.is_boolean()) {
        return Err("params.normalize must be true or false".into());
    }
    Ok(map)
}

/// One input: its text and, from a JSONL record, its `id`.
struct Input {
    id: Option<Json>,
    text: String,
}

async fn load_inputs(settings: &EmbedSettings, params: &Json) -> Result<Vec<Input>, TaskError> {
    if let Some(texts) = params.get("texts").and_then(Json::as_array) {
        let texts = texts.iter().filter_map(Json::as_str);
        return Ok(texts
            .map(|t| Input {
                id: None,
                text: t.to_string(),
            })
            .collect());
    }
    let path = params
        .get("input_file")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let body = settings.files.read_input(path).await?;
    let field = params.get("text_field").and_then(Json::as_str);
    let inputs: Vec<Input> = super::jsonl::parse("input_file", &body, field)
        .map_err(TaskError::permanent)?
        .into_iter()
        .map(|r| Input {
            id: r.id,
            text: r.text,
        })
        .collect();
    if inputs.is_empty() {
        return Err(TaskError::permanent(format!(
            "input_file {path} holds no records"
        )));
    }
    Ok(inputs)
}

/// Where vectors go.
enum Sink {
    Inline(Vec<Vec<f32>>),
    /// Written to `temp`, renamed to `path` at the end: a retried or abandoned attempt never
    /// leaves a half-written output under the final name.
    File {
        path: PathBuf,
        temp: TempFile,
        writer: tokio::io::BufWriter<tokio::fs::File>,
    },
    Discard,
}

impl Sink {
    async fn file(path: PathBuf, workflow_id: &str) -> Result<Sink, TaskError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Unique per attempt: two attempts of one workflow (a lost lease) never share a file.
        let attempt = uuid::Uuid::new_v4().simple().to_string();
        let temp = path.with_file_name(format!(".{name}.{workflow_id}.{}.partial", &attempt[..8]));
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_error(&e, format!("cannot create {}: {e}", dir.display())))?;
        }
        if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
            let m = format!("output_file {} is a directory", path.display());
            return Err(TaskError::permanent(m));
        }
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await
            .map_err(|e| io_error(&e, format!("cannot write {}: {e}", temp.display())))?;
        Ok(Sink::File {
            path,
            temp: TempFile(Some(temp)),
            writer: tokio::io::BufWriter::new(file),
        })
    }

    async fn push(
        &mut self,
        index: usize,
        id: Option<&Json>,
        vector: Vec<f32>,
    ) -> Result<(), TaskError> {
        match self {
            Sink::Inline(vectors) => vectors.push(vector),
            Sink::File { temp, writer, .. } => {
                let mut line = json!({ "index": index, "embedding": vector });
                if let (Some(id), Some(map)) = (id, line.as_object_mut()) {
                    map.insert("id".into(), id.clone());
                }
                let mut bytes = line.to_string().into_bytes();
                bytes.push(b'\n');
                writer.write_all(&bytes).await.map_err(|e| {
                    TaskError::retryable(format!("cannot write {}: {e}", temp.display()))
                })?;
            }
            Sink::Discard => {}
        }
        Ok(())
    }
}

/// A partial output file, deleted unless renamed into place: an attempt that fails, times out
/// or is cancelled leaves nothing behind.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn display(&self) -> std::path::Display<'_> {
        self.0
            .as_deref()
            .unwrap_or(std::path::Path::new(""))
            .display()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn finish_file(
    mut writer: tokio::io::BufWriter<tokio::fs::File>,
    mut temp: TempFile,
    path: &PathBuf,
) -> Result<(), TaskError> {
    let io =
        |e: std::io::Error| TaskError::retryable(format!("cannot write {}: {e}", path.display()));
    writer.flush().await.map_err(io)?;
    writer.get_ref().sync_all().await.map_err(io)?;
    if let Some(partial) = &temp.0 {
        tokio::fs::rename(partial, path).await.map_err(io)?;
    }
    temp.0 = None;
    Ok(())
}

/// Embeds every input a chunk at a time into `sink`; returns the summary fields.
async fn embed_all(
    settings: &EmbedSettings,
    ctx: &TaskContext,
    sink: &mut Sink,
) -> Result<Map<String, Json>, TaskError> {
    let inputs = load_inputs(settings, &ctx.params).await?;
    let total = inputs.len();
    let model = ctx.params["model"].as_str().unwrap_or_default().to_string();
    let (mut served_by, mut dimensions, mut tokens, mut cached) = (model.clone(), 0, 0_u64, 0_u64);
    let mut client = settings.client.clone();
    for (n, chunk) in inputs.chunks(settings.chunk_size.max(1)).enumerate() {
        let first = n * settings.chunk_size.max(1);
        let mut request = tonic::Request::new(EmbedRequest {
            model: model.clone(),
            inputs: chunk.iter().map(|i| i.text.clone()).collect(),
            dimensions: ctx
                .params
                .get("dimensions")
                .and_then(Json::as_u64)
                .and_then(|d| u32::try_from(d).ok()),
            normalize: ctx.params.get("normalize").and_then(Json::as_bool),
            truncate: None,
            prompt_name: ctx
                .params
                .get("prompt_name")
                .and_then(Json::as_str)
                .map(str::to_string),
            cache_policy: 0,
        });
        request.set_timeout(CALL_TIMEOUT);
        let response = client
            .embed(request)
            .await
            .map_err(|s| {
                super::mesh_error(
                    &s,
                    &format!("EmbeddingService failed on the chunk from input {first}"),
                )
            })?
            .into_inner();
        if response.embeddings.len() != chunk.len() {
            return Err(TaskError::retryable(format!(
                "EmbeddingService answered {} vectors for the {} inputs from input {first}",
                response.embeddings.len(),
                chunk.len()
            )));
        }
        let width = response.embeddings.first().map_or(0, |e| e.values.len());
        if matches!(sink, Sink::Inline(_)) && total.saturating_mul(width) > MAX_INLINE_VALUES {
            return Err(TaskError::permanent(format!(
                "{total} vectors of {width} dimensions are too many to return inline \
                 (at most {MAX_INLINE_VALUES} numbers): give output_file"
            )));
        }
        served_by = response.model;
        tokens += response.usage.map_or(0, |u| u64::from(u.prompt_tokens));
        cached += u64::from(response.cached);
        for (i, embedding) in response.embeddings.into_iter().enumerate() {
            dimensions = embedding.values.len();
            sink.push(
                first + i,
                chunk.get(i).and_then(|c| c.id.as_ref()),
                embedding.values,
            )
            .await?;
        }
        let done = (first + chunk.len()) as u64;
        // The last chunk's progress goes with the outcome: one write fewer, which is half the
        // writes of a small job.
        let message = format!("embedded {done} of {total}");
        if done < total as u64 {
            ctx.progress(done, total as u64, &message).await;
        } else {
            ctx.final_progress(done, total as u64, &message);
        }
    }
    let mut summary = Map::new();
    summary.insert("model".into(), json!(served_by));
    summary.insert("count".into(), json!(total));
    summary.insert("dimensions".into(), json!(dimensions));
    summary.insert("prompt_tokens".into(), json!(tokens));
    summary.insert("cached".into(), json!(cached));
    Ok(summary)
}
