//! `[vectors]`: where collections live and how ingestion cuts documents. The Qdrant server
//! itself is `[qdrant]` (url, api_key, timeout_ms).

use serde::{Deserialize, Serialize};

/// Which store holds the vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VectorStoreKind {
    /// In process, files under `vectors.path`: no server needed.
    Embedded,
    /// The `[qdrant]` server over gRPC.
    Qdrant,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VectorsConfig {
    pub store: VectorStoreKind,
    /// The embedded store's directory (created if missing).
    pub path: String,
    /// Points in one UpsertPoints call.
    pub max_points_per_upsert: usize,
    /// A point's payload, as JSON text.
    pub max_payload_bytes: usize,
    /// `vector_ingest` cuts a document into chunks of this many words (whitespace-separated:
    /// about 1.3 model tokens each for English, so 200 words fit a 512-token model)...
    pub chunk_words: usize,
    /// ...each starting this many words before the previous one ended.
    pub chunk_overlap_words: usize,
    /// Points `vector_ingest` sends per UpsertPoints call (one embedding batch).
    pub ingest_batch: usize,
}

impl Default for VectorsConfig {
    fn default() -> Self {
        VectorsConfig {
            store: VectorStoreKind::Embedded,
            path: "data/vectors".to_string(),
            max_points_per_upsert: 1_024,
            max_payload_bytes: 64 * 1024,
            chunk_words: 200,
            chunk_overlap_words: 40,
            ingest_batch: 64,
        }
    }
}
