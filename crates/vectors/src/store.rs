//! The one interface both stores implement, in the store's own terms: collections of points
//! with fixed-size vectors, cosine distance, JSON payloads and Qdrant filters. Names, models,
//! document ids and embedding are the core's business (`core.rs`), not the store's.

use serde_json::{Map, Value as Json};

use crate::filter::Filter;

/// What a collection was created with. The model is recorded with the collection (Qdrant:
/// the collection's metadata), so a restarted Citadel knows what to embed queries with.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionSpec {
    pub name: String,
    pub model: String,
    pub dimensions: u32,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    pub spec: CollectionSpec,
    pub points_count: u64,
}

/// One point as stored: a UUID, a vector of the collection's size and a payload object (the
/// core puts the document id, chunk and text under the reserved `_citadel_*` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    pub id: uuid::Uuid,
    pub vector: Vec<f32>,
    pub payload: Map<String, Json>,
}

#[derive(Debug, Clone)]
pub struct StoreQuery {
    pub vector: Vec<f32>,
    pub top_k: usize,
    pub filter: Option<Filter>,
    pub score_threshold: Option<f32>,
    pub with_payload: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPoint {
    pub id: uuid::Uuid,
    pub score: f32,
    /// Empty when the query asked for no payload.
    pub payload: Map<String, Json>,
}

/// Which points a delete removes.
#[derive(Debug, Clone)]
pub enum PointSelector {
    Ids(Vec<uuid::Uuid>),
    Filter(Filter),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("collection {0:?} does not exist")]
    NotFound(String),
    #[error("collection {0:?} already exists")]
    AlreadyExists(String),
    /// The request cannot be served as asked (the store refused it).
    #[error("{0}")]
    Invalid(String),
    /// The store cannot be reached or is overloaded now; worth retrying.
    #[error("vector store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a broken file, an unexpected answer.
    #[error("vector store failed: {0}")]
    Internal(String),
}

/// Health as `/health/detailed` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreHealth {
    /// "embedded" or "qdrant".
    pub kind: &'static str,
    pub ok: bool,
    /// Where (a directory or a URL) and, when not ok, why.
    pub detail: String,
}

#[async_trait::async_trait]
pub trait VectorStore: Send + Sync + 'static {
    async fn create_collection(&self, spec: &CollectionSpec) -> Result<(), StoreError>;
    async fn list_collections(&self) -> Result<Vec<CollectionInfo>, StoreError>;
    /// `Ok(None)` for an unknown name.
    async fn collection(&self, name: &str) -> Result<Option<CollectionInfo>, StoreError>;
    async fn delete_collection(&self, name: &str) -> Result<(), StoreError>;
    /// Inserts or replaces; durable when it returns.
    async fn upsert(&self, collection: &str, points: Vec<StoredPoint>) -> Result<(), StoreError>;
    async fn delete_points(
        &self,
        collection: &str,
        selector: PointSelector,
    ) -> Result<(), StoreError>;
    /// Best first; scores are cosine similarities.
    async fn search(
        &self,
        collection: &str,
        query: StoreQuery,
    ) -> Result<Vec<ScoredPoint>, StoreError>;
    async fn count(&self, collection: &str, filter: Option<Filter>) -> Result<u64, StoreError>;
    async fn health(&self) -> StoreHealth;
}
