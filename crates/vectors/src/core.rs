//! `Vectors`, the core every edge calls: collection names and their models, point validation
//! (sizes, payload bounds, reserved keys), point ids derived from document ids, texts embedded
//! through the embedding core (its cache, batching and prompts apply), and search by text.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

use citadel_embeddings::{CachePolicy, EmbedParams, EmbeddingCore};
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};
// The embedding core's deadlines are tokio's (its timers); so are the callers'.
use tokio::time::Instant;

use crate::{
    error::VectorError,
    filter::Filter,
    metrics::metrics,
    store::{
        CollectionInfo, CollectionSpec, PointSelector, StoreError, StoreHealth, StoreQuery,
        StoredPoint, VectorStore,
    },
};

/// Payload keys the core keeps beside the caller's payload.
pub const DOCUMENT_KEY: &str = "_citadel_document_id";
pub const CHUNK_KEY: &str = "_citadel_chunk";
pub const TEXT_KEY: &str = "_citadel_text";
const RESERVED_PREFIX: &str = "_citadel";
/// Document ids one delete may name (a filter's `match.any` bound).
const MAX_DELETE_IDS: usize = crate::filter::MAX_LIST_ITEMS;
/// How long a remembered collection spec is trusted without asking the store.
const SPEC_TTL: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct VectorLimits {
    pub max_points_per_upsert: usize,
    /// A point's payload as JSON text, at most this many bytes.
    pub max_payload_bytes: usize,
    pub max_top_k: u32,
}

impl Default for VectorLimits {
    fn default() -> Self {
        VectorLimits {
            max_points_per_upsert: 1_024,
            max_payload_bytes: 64 * 1024,
            max_top_k: 1_000,
        }
    }
}

pub enum Content {
    Text(String),
    Vector(Vec<f32>),
}

pub struct PointInput {
    pub document_id: String,
    pub chunk: u32,
    pub content: Content,
    pub payload: Map<String, Json>,
}

pub enum Query {
    Text(String),
    Vector(Vec<f32>),
}

pub struct SearchInput {
    pub query: Query,
    pub top_k: Option<u32>,
    pub filter: Option<Filter>,
    pub score_threshold: Option<f32>,
    pub with_payload: bool,
    pub deadline: Option<Instant>,
}

pub struct Hit {
    pub id: uuid::Uuid,
    pub document_id: String,
    pub chunk: u32,
    pub score: f32,
    pub text: String,
    pub payload: Map<String, Json>,
}

pub struct SearchOutput {
    pub hits: Vec<Hit>,
    pub embed_us: u64,
    pub store_us: u64,
}

pub enum DeleteSelector {
    Documents(Vec<String>),
    Filter(Filter),
}

pub struct Vectors {
    store: Arc<dyn VectorStore>,
    store_kind: &'static str,
    embeddings: Arc<EmbeddingCore>,
    limits: VectorLimits,
    /// A collection's spec never changes once created, so each search or upsert need not ask
    /// the store (a Qdrant round trip) which model and size it has. A name deleted here is
    /// forgotten at once; one deleted (and perhaps re-created) by another replica sharing the
    /// Qdrant drops out on the store's NOT_FOUND or after `SPEC_TTL`.
    specs: RwLock<HashMap<String, (CollectionSpec, Instant)>>,
}

impl Vectors {
    pub fn new(
        store: Arc<dyn VectorStore>,
        store_kind: &'static str,
        embeddings: Arc<EmbeddingCore>,
        limits: VectorLimits,
    ) -> Vectors {
        Vectors {
            store,
            store_kind,
            embeddings,
            limits,
            specs: RwLock::default(),
        }
    }

    /// The collection's spec, from memory when seen within `SPEC_TTL`.
    pub async fn spec(&self, name: &str) -> Result<CollectionSpec, VectorError> {
        let remembered = {
            let specs = self.specs.read().unwrap_or_else(|p| p.into_inner());
            specs
                .get(name)
                .filter(|(_, at)| at.elapsed() < SPEC_TTL)
                .map(|(spec, _)| spec.clone())
        };
        match remembered {
            Some(spec) => Ok(spec),
            None => Ok(self.get(name).await?.spec),
        }
    }

    fn remember(&self, spec: &CollectionSpec) {
        let mut specs = self.specs.write().unwrap_or_else(|p| p.into_inner());
        specs.insert(spec.name.clone(), (spec.clone(), Instant::now()));
    }

    fn forget(&self, name: &str) {
        self.specs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// A store error, with a collection gone from the store forgotten here too (and named:
    /// Qdrant's own message is not the name).
    fn stored<T>(&self, name: &str, r: Result<T, StoreError>) -> Result<T, VectorError> {
        match r {
            Err(StoreError::NotFound(_)) => {
                self.forget(name);
                Err(VectorError::NotFound(name.to_string()))
            }
            r => Ok(r?),
        }
    }

    /// The canonical name of an embedding model or alias (what a collection records).
    pub fn model_name(&self, model: &str) -> Result<String, VectorError> {
        Ok(self.embeddings.model(model)?.info.name)
    }

    pub async fn create(&self, name: &str, model: &str) -> Result<CollectionInfo, VectorError> {
        check_name(name)?;
        let view = self.embeddings.model(model)?;
        let spec = CollectionSpec {
            name: name.to_string(),
            model: view.info.name.clone(),
            dimensions: view.info.dimensions,
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        };
        self.store.create_collection(&spec).await?;
        self.remember(&spec);
        Ok(CollectionInfo {
            spec,
            points_count: 0,
        })
    }

    pub async fn list(&self) -> Result<Vec<CollectionInfo>, VectorError> {
        Ok(self.store.list_collections().await?)
    }

    pub async fn get(&self, name: &str) -> Result<CollectionInfo, VectorError> {
        match self.store.collection(name).await? {
            Some(info) => {
                self.remember(&info.spec);
                Ok(info)
            }
            None => {
                self.forget(name);
                Err(VectorError::NotFound(name.to_string()))
            }
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), VectorError> {
        let deleted = self.store.delete_collection(name).await;
        self.forget(name);
        self.stored(name, deleted)
    }

    /// Embeds the texts (one call for the batch, the model's `document` prompt when it has
    /// one), then writes every point at once.
    pub async fn upsert(
        &self,
        collection: &str,
        points: Vec<PointInput>,
        deadline: Option<Instant>,
    ) -> Result<u64, VectorError> {
        let started = Instant::now();
        let spec = self.spec(collection).await?;
        if points.is_empty() || points.len() > self.limits.max_points_per_upsert {
            let max = self.limits.max_points_per_upsert;
            return Err(VectorError::invalid(
                "points",
                format!("points must hold 1 to {max} points, got {}", points.len()),
            ));
        }
        let mut texts = Vec::new();
        for (i, p) in points.iter().enumerate() {
            self.check_point(i, p, &spec)?;
            if let Content::Text(t) = &p.content {
                texts.push(t.clone());
            }
        }
        let mut vectors = self
            .embed(&spec.model, texts, "document", deadline)
            .await?
            .into_iter();
        let mut stored = Vec::with_capacity(points.len());
        for p in points {
            let (vector, text) = match p.content {
                Content::Vector(v) => (v, None),
                Content::Text(t) => match vectors.next() {
                    Some(v) => (v, Some(t)),
                    None => return Err(VectorError::Internal("fewer vectors than texts".into())),
                },
            };
            let mut payload = p.payload;
            payload.insert(DOCUMENT_KEY.into(), Json::from(p.document_id.clone()));
            payload.insert(CHUNK_KEY.into(), Json::from(p.chunk));
            if let Some(text) = text {
                payload.insert(TEXT_KEY.into(), Json::from(text));
            }
            stored.push(StoredPoint {
                id: point_id(&p.document_id, p.chunk),
                vector,
                payload,
            });
        }
        let n = stored.len() as u64;
        let written = self.store.upsert(collection, stored).await;
        self.stored(collection, written)?;
        metrics().upserted(self.store_kind, n, started.elapsed());
        Ok(n)
    }

    pub async fn delete_points(
        &self,
        collection: &str,
        selector: DeleteSelector,
    ) -> Result<(), VectorError> {
        self.spec(collection).await?;
        let selector = match selector {
            DeleteSelector::Documents(ids) if ids.len() > MAX_DELETE_IDS => {
                return Err(VectorError::invalid(
                    "ids",
                    format!(
                        "at most {MAX_DELETE_IDS} document ids per delete, got {}",
                        ids.len()
                    ),
                ));
            }
            DeleteSelector::Documents(ids) if ids.is_empty() => {
                return Err(VectorError::invalid(
                    "ids",
                    "ids must name at least one document",
                ));
            }
            // Every chunk of each document, whatever its count.
            DeleteSelector::Documents(ids) => PointSelector::Filter(document_filter(&ids)?),
            DeleteSelector::Filter(f) => PointSelector::Filter(f),
        };
        let deleted = self.store.delete_points(collection, selector).await;
        self.stored(collection, deleted)
    }

    pub async fn search(
        &self,
        collection: &str,
        input: SearchInput,
    ) -> Result<SearchOutput, VectorError> {
        let spec = self.spec(collection).await?;
        let top_k = input.top_k.unwrap_or(10);
        if top_k == 0 || top_k > self.limits.max_top_k {
            let max = self.limits.max_top_k;
            return Err(VectorError::invalid(
                "top_k",
                format!("top_k must be 1 to {max}"),
            ));
        }
        if input.score_threshold.is_some_and(|t| !t.is_finite()) {
            return Err(VectorError::invalid(
                "score_threshold",
                "score_threshold must be a number",
            ));
        }
        let embed_started = Instant::now();
        let (vector, embed) = match input.query {
            Query::Vector(v) => {
                check_dimensions("query", v.len(), &spec)?;
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(VectorError::invalid(
                        "query",
                        "query vector holds a value that is not a finite number",
                    ));
                }
                (v, None)
            }
            Query::Text(t) if t.trim().is_empty() => {
                return Err(VectorError::invalid("query", "query must not be empty"));
            }
            Query::Text(t) => {
                let mut v = self
                    .embed(&spec.model, vec![t], "query", input.deadline)
                    .await?;
                (v.pop().unwrap_or_default(), Some(embed_started.elapsed()))
            }
        };
        let store_started = Instant::now();
        let scored = self
            .store
            .search(
                collection,
                StoreQuery {
                    vector,
                    top_k: top_k as usize,
                    filter: input.filter,
                    score_threshold: input.score_threshold,
                    with_payload: true,
                },
            )
            .await;
        let scored = self.stored(collection, scored)?;
        let store_took = store_started.elapsed();
        metrics().searched(self.store_kind, embed, store_took);
        let hits = scored
            .into_iter()
            .map(|p| hit(p, input.with_payload))
            .collect();
        Ok(SearchOutput {
            hits,
            embed_us: embed.map_or(0, |d| d.as_micros() as u64),
            store_us: store_took.as_micros() as u64,
        })
    }

    pub async fn count(
        &self,
        collection: &str,
        filter: Option<Filter>,
    ) -> Result<u64, VectorError> {
        let counted = self.store.count(collection, filter).await;
        self.stored(collection, counted)
    }

    pub async fn health(&self) -> StoreHealth {
        self.store.health().await
    }

    async fn embed(
        &self,
        model: &str,
        texts: Vec<String>,
        prompt: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<Vec<f32>>, VectorError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // The model's own prompt for the role when it has one (nomic's `search_query: `);
        // otherwise its default.
        let view = self.embeddings.model(model)?;
        let prompt_name = view
            .prompt_names
            .iter()
            .any(|p| p == prompt)
            .then(|| prompt.to_string());
        let embedded = self
            .embeddings
            .embed(EmbedParams {
                model: model.to_string(),
                inputs: texts,
                dimensions: None,
                normalize: true,
                truncate: true,
                prompt_name,
                cache_policy: CachePolicy::Default,
                deadline,
            })
            .await?;
        Ok(embedded.vectors)
    }

    fn check_point(
        &self,
        i: usize,
        p: &PointInput,
        spec: &CollectionSpec,
    ) -> Result<(), VectorError> {
        if p.document_id.is_empty() || p.document_id.len() > 256 {
            return Err(VectorError::invalid(
                "points",
                format!("points[{i}].id must be 1 to 256 bytes"),
            ));
        }
        match &p.content {
            Content::Text(t) if t.trim().is_empty() => {
                return Err(VectorError::invalid(
                    "points",
                    format!("points[{i}].text is empty"),
                ));
            }
            Content::Vector(v) => check_dimensions(&format!("points[{i}].vector"), v.len(), spec)?,
            Content::Text(_) => {}
        }
        if let Some(v) = match &p.content {
            Content::Vector(v) => v.iter().find(|x| !x.is_finite()),
            Content::Text(_) => None,
        } {
            return Err(VectorError::invalid(
                "points",
                format!("points[{i}].vector holds {v}"),
            ));
        }
        if let Some(key) = p.payload.keys().find(|k| k.starts_with(RESERVED_PREFIX)) {
            return Err(VectorError::invalid(
                "points",
                format!(
                    "points[{i}].payload key `{key}` is reserved (keys starting with `{RESERVED_PREFIX}`)"
                ),
            ));
        }
        let size = serde_json::to_vec(&p.payload).map_or(0, |b| b.len());
        if size > self.limits.max_payload_bytes {
            let max = self.limits.max_payload_bytes;
            return Err(VectorError::invalid(
                "points",
                format!("points[{i}].payload is {size} bytes of JSON; at most {max} are accepted"),
            ));
        }
        Ok(())
    }
}

fn check_dimensions(what: &str, got: usize, spec: &CollectionSpec) -> Result<(), VectorError> {
    let want = spec.dimensions as usize;
    if got != want {
        return Err(VectorError::invalid(
            if what == "query" { "query" } else { "points" },
            format!(
                "{what} has {got} dimensions; the collection `{}` (model {}) holds vectors of {want}",
                spec.name, spec.model
            ),
        ));
    }
    Ok(())
}

/// 1 to 64 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit: safe as a
/// directory name and as a Qdrant collection name.
pub(crate) fn check_name(name: &str) -> Result<(), VectorError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(VectorError::invalid(
            "name",
            format!(
                "collection name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
            ),
        ))
    }
}

/// The stored id of a document's chunk: the same document and chunk always give the same
/// UUID, so a retried ingest replaces its points instead of adding copies.
pub fn point_id(document_id: &str, chunk: u32) -> uuid::Uuid {
    let digest = Sha256::new()
        .chain_update(document_id.as_bytes())
        .chain_update([0u8])
        .chain_update(chunk.to_le_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // A version 8 (custom) UUID of the RFC 9562 variant, as Qdrant and any UUID parser expect.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes)
}

fn document_filter(ids: &[String]) -> Result<Filter, VectorError> {
    let json = serde_json::json!({"must": [{"key": DOCUMENT_KEY, "match": {"any": ids}}]});
    Filter::from_value(&json)
        .map_err(|e| VectorError::invalid("ids", e.to_string()))?
        .ok_or_else(|| VectorError::invalid("ids", "ids must name at least one document"))
}

fn hit(p: crate::store::ScoredPoint, with_payload: bool) -> Hit {
    let mut payload = p.payload;
    let document_id = match payload.remove(DOCUMENT_KEY) {
        Some(Json::String(s)) => s,
        _ => String::new(),
    };
    let chunk = payload
        .remove(CHUNK_KEY)
        .and_then(|c| c.as_u64())
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(0);
    let text = match payload.remove(TEXT_KEY) {
        Some(Json::String(s)) if with_payload => s,
        _ => String::new(),
    };
    Hit {
        id: p.id,
        document_id,
        chunk,
        score: p.score,
        text,
        payload: if with_payload { payload } else { Map::new() },
    }
}
