//! The vector core from `[vectors]` and `[qdrant]`: which store, where, and its bounds.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use citadel_config::{Config, VectorStoreKind};
use citadel_embeddings::EmbeddingCore;
use citadel_vectors::{EmbeddedStore, QdrantStore, VectorLimits, VectorStore, Vectors};

pub fn build(config: &Config, core: Arc<EmbeddingCore>) -> anyhow::Result<Arc<Vectors>> {
    let v = &config.vectors;
    let (store, kind): (Arc<dyn VectorStore>, &'static str) = match v.store {
        VectorStoreKind::Embedded => {
            let store = EmbeddedStore::open(&v.path).with_context(|| {
                format!(
                    "vectors.path = {:?}: cannot open the embedded vector store",
                    v.path
                )
            })?;
            (Arc::new(store), "embedded")
        }
        VectorStoreKind::Qdrant => {
            // Validation guarantees the section when the store is Qdrant.
            let q = config
                .qdrant
                .as_ref()
                .context("vectors.store = \"qdrant\" needs a [qdrant] section")?;
            let store = QdrantStore::new(
                &q.url,
                q.api_key.as_deref(),
                Duration::from_millis(q.timeout_ms),
            )
            .map_err(anyhow::Error::msg)?;
            (Arc::new(store), "qdrant")
        }
    };
    let limits = VectorLimits {
        max_points_per_upsert: v.max_points_per_upsert,
        max_payload_bytes: v.max_payload_bytes,
        ..VectorLimits::default()
    };
    Ok(Arc::new(Vectors::new(store, kind, core, limits)))
}
