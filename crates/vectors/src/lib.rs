//! Vector collections: documents in, search results out.
//!
//! This crate owns the vector core every edge calls (`Vectors`: collection names bound to an
//! embedding model, point validation and payload bounds, point ids derived from document ids
//! and chunks, texts embedded through the embedding core so its cache, batching and prompts
//! apply, search by text), Qdrant's JSON filter language (`filter`), the `VectorStore` trait
//! and its two stores: Qdrant over gRPC (`qdrant`, production) and the embedded store kept
//! under a directory (`embedded`, the default). It must not know gRPC services, HTTP or config
//! files: `citadel-grpc` serves it and the binary wires it.

#![forbid(unsafe_code)]

mod core;
mod embedded;
mod error;
pub mod filter;
mod metrics;
mod qdrant;
mod store;

pub use core::{
    CHUNK_KEY, Content, DOCUMENT_KEY, DeleteSelector, Hit, PointInput, Query, SearchInput,
    SearchOutput, TEXT_KEY, VectorLimits, Vectors, point_id,
};
pub use embedded::{EmbeddedStore, snapshot as embedded_snapshot};
pub use error::VectorError;
pub use filter::{Filter, FilterError};
pub use qdrant::QdrantStore;
pub use store::{
    CollectionInfo, CollectionSpec, PointSelector, ScoredPoint, StoreError, StoreHealth,
    StoreQuery, StoredPoint, VectorStore,
};
