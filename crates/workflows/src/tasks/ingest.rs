//! `vector_ingest`: documents (inline, or a JSONL file of `{"id", "text", "payload"}`) cut
//! into overlapping chunks of words and upserted into a collection through `VectorService`, a
//! batch at a time, with progress and a checkpoint after each batch.
//!
//! A chunk's point id derives from its document id and index (the vector core's rule), and
//! the chunks of a given input always come out the same, so a retried attempt skips the
//! batches its checkpoint says were committed, and redoing one never duplicates a point. The
//! checkpoint carries a fingerprint of the chunks it counted (collection, texts, payloads, chunk
//! settings): an attempt that finds different chunks (the file was edited before a retry, the
//! chunk settings changed) starts again from the first batch instead of skipping new work.
//!
//! Parameters: `collection`; `documents: [{"id", "text", "payload"?}]` or `input_file` (with
//! `text_field`, default `text`).

use std::{collections::HashSet, time::Duration};

use citadel_proto::v1::{
    Point, UpsertPointsRequest, point, vector_service_client::VectorServiceClient,
};
use serde_json::{Map, Value as Json, json};

use super::{FileRoot, MeshTransport, jsonl};
use crate::{Task, TaskContext, TaskError};

#[derive(Clone)]
pub struct IngestSettings {
    pub client: VectorServiceClient<MeshTransport>,
    pub files: FileRoot,
    pub chunk_words: usize,
    pub overlap_words: usize,
    /// Points per UpsertPoints call.
    pub batch: usize,
}

pub struct VectorIngest(pub IngestSettings);

const MAX_INLINE_DOCUMENTS: usize = 2_048;
/// One batch's call may take this long (a cold model embedding a full batch).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// One document as read.
struct Document {
    id: String,
    text: String,
    payload: Map<String, Json>,
}

#[async_trait::async_trait]
impl Task for VectorIngest {
    fn kind(&self) -> &'static str {
        "vector_ingest"
    }

    fn validate(&self, params: &Json) -> Result<(), String> {
        let map = super::object(self.kind(), params)?;
        match map.get("collection") {
            Some(Json::String(c)) if !c.is_empty() => {}
            _ => return Err("params.collection must name a collection".into()),
        }
        match (map.get("documents"), map.get("input_file")) {
            (Some(Json::Array(docs)), None) => {
                if docs.is_empty() || docs.len() > MAX_INLINE_DOCUMENTS {
                    return Err(format!(
                        "params.documents must hold 1 to {MAX_INLINE_DOCUMENTS} documents (use input_file for more)"
                    ));
                }
                documents(docs).map(|_| ())
            }
            (None, Some(Json::String(path))) => FileRoot::check("input_file", path),
            _ => Err(
                "params must have either documents (an array of {\"id\", \"text\"}) or input_file"
                    .into(),
            ),
        }
    }

    async fn run(&self, ctx: TaskContext) -> Result<Json, TaskError> {
        let settings = &self.0;
        let collection = ctx.params["collection"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let docs = load(settings, &ctx.params).await?;
        let points = chunk_all(&docs, settings.chunk_words, settings.overlap_words);
        let total = points.len() as u64;
        let print = fingerprint(&collection, &points);
        // Batches an earlier attempt committed are not sent again, if they are these batches.
        let mut done = ctx
            .checkpoint()
            .filter(|c| c.get("fingerprint").and_then(Json::as_str) == Some(print.as_str()))
            .and_then(|c| c.get("points_done"))
            .and_then(Json::as_u64)
            .unwrap_or(0)
            .min(total);
        let mut client = settings.client.clone();
        let mut calls = 0u64;
        for batch in points[done as usize..].chunks(settings.batch.max(1)) {
            let mut request = tonic::Request::new(UpsertPointsRequest {
                collection: collection.clone(),
                points: batch.to_vec(),
            });
            request.set_timeout(CALL_TIMEOUT);
            client.upsert_points(request).await.map_err(|s| {
                super::mesh_error(
                    &s,
                    &format!("VectorService failed on the batch from chunk {done}"),
                )
            })?;
            calls += 1;
            done += batch.len() as u64;
            ctx.save_checkpoint(&json!({ "points_done": done, "fingerprint": print }))
                .await;
            let message = format!("upserted {done} of {total} chunks");
            if done < total {
                ctx.progress(done, total, &message).await;
            } else {
                ctx.final_progress(done, total, &message);
            }
        }
        Ok(json!({
            "collection": collection,
            "documents": docs.len(),
            "points": total,
            "upsert_calls": calls,
        }))
    }
}

async fn load(settings: &IngestSettings, params: &Json) -> Result<Vec<Document>, TaskError> {
    if let Some(docs) = params.get("documents").and_then(Json::as_array) {
        return documents(docs).map_err(TaskError::permanent);
    }
    let path = params
        .get("input_file")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let body = settings.files.read_input(path).await?;
    let field = params.get("text_field").and_then(Json::as_str);
    let records = jsonl::parse("input_file", &body, field).map_err(TaskError::permanent)?;
    if records.is_empty() {
        return Err(TaskError::permanent(format!(
            "input_file {path} holds no records"
        )));
    }
    let mut seen = HashSet::new();
    records
        .into_iter()
        .map(|r| {
            let id = document_id(r.id.as_ref()).ok_or_else(|| {
                format!(
                    "input_file:{}: needs an \"id\" (a string or a whole number)",
                    r.line
                )
            })?;
            if !seen.insert(id.clone()) {
                return Err(format!(
                    "input_file:{}: the id {id:?} appears twice",
                    r.line
                ));
            }
            Ok(Document {
                id,
                text: r.text,
                payload: r.payload.unwrap_or_default(),
            })
        })
        .collect::<Result<_, String>>()
        .map_err(TaskError::permanent)
}

/// Inline documents, checked as a file's lines are.
fn documents(docs: &[Json]) -> Result<Vec<Document>, String> {
    let mut seen = HashSet::new();
    docs.iter()
        .enumerate()
        .map(|(i, d)| {
            let id = document_id(d.get("id")).ok_or_else(|| {
                format!("params.documents[{i}].id must be a string or a whole number")
            })?;
            if !seen.insert(id.clone()) {
                return Err(format!("params.documents[{i}].id {id:?} appears twice"));
            }
            let text = match d.get("text") {
                Some(Json::String(t)) if !t.trim().is_empty() => t.clone(),
                _ => {
                    return Err(format!(
                        "params.documents[{i}].text must be a non-empty string"
                    ));
                }
            };
            let payload = match d.get("payload") {
                None | Some(Json::Null) => Map::new(),
                Some(Json::Object(p)) => p.clone(),
                Some(_) => return Err(format!("params.documents[{i}].payload must be an object")),
            };
            Ok(Document { id, text, payload })
        })
        .collect()
}

fn document_id(id: Option<&Json>) -> Option<String> {
    match id? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// What the checkpoint's count is a count of: every point's collection, id, chunk, text and
/// payload, in order.
fn fingerprint(collection: &str, points: &[Point]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(collection.as_bytes());
    for p in points {
        let text = match &p.content {
            Some(point::Content::Text(t)) => t.as_str(),
            _ => "",
        };
        for part in [p.id.as_str(), text, p.payload_json.as_str()] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        hash.update(p.chunk.to_le_bytes());
    }
    hash.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every document's chunks as points, in order.
fn chunk_all(docs: &[Document], words: usize, overlap: usize) -> Vec<Point> {
    let payload_of = |d: &Document| Json::Object(d.payload.clone()).to_string();
    docs.iter()
        .flat_map(|d| {
            let payload = payload_of(d);
            chunks(&d.text, words, overlap)
                .into_iter()
                .enumerate()
                .map(move |(i, text)| Point {
                    id: d.id.clone(),
                    content: Some(point::Content::Text(text)),
                    payload_json: payload.clone(),
                    chunk: u32::try_from(i).unwrap_or(u32::MAX),
                })
        })
        .collect()
}

/// Windows of `words` words, each starting `words - overlap` after the last; a text that fits
/// in one window is kept exactly as written.
pub(crate) fn chunks(text: &str, words: usize, overlap: usize) -> Vec<String> {
    let all: Vec<&str> = text.split_whitespace().collect();
    let words = words.max(1);
    if all.len() <= words {
        return vec![text.to_string()];
    }
    let step = words.saturating_sub(overlap).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + words).min(all.len());
        out.push(all[start..end].join(" "));
        if end == all.len() {
            return out;
        }
        start += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checkpoint's count is only trusted for the same chunks: other texts, payloads,
    /// chunk settings or collection give another fingerprint.
    #[test]
    fn fingerprint_follows_the_chunks() {
        let doc = |text: &str, n: i64| Document {
            id: "a".into(),
            text: text.into(),
            payload: Map::from_iter([("n".to_string(), Json::from(n))]),
        };
        let words = "one two three four five six seven";
        let base = fingerprint("c", &chunk_all(&[doc(words, 1)], 4, 1));
        assert_eq!(base, fingerprint("c", &chunk_all(&[doc(words, 1)], 4, 1)));
        for other in [
            fingerprint("c", &chunk_all(&[doc(words, 1)], 3, 1)),
            fingerprint("c", &chunk_all(&[doc(words, 2)], 4, 1)),
            fingerprint("c", &chunk_all(&[doc("one two three", 1)], 4, 1)),
            fingerprint("d", &chunk_all(&[doc(words, 1)], 4, 1)),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn windows_overlap_and_cover_every_word() {
        let text = (0..10).map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
        let got = chunks(&text, 4, 1);
        assert_eq!(got, ["0 1 2 3", "3 4 5 6", "6 7 8 9"]);
        assert_eq!(chunks("  short  text ", 4, 1), ["  short  text "]);
        assert_eq!(chunks(&text, 5, 0), ["0 1 2 3 4", "5 6 7 8 9"]);
    }
}
