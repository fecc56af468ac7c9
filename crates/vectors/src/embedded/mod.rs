//! The embedded store: every collection in memory, searched exactly, and kept on disk under one
//! directory so it survives restarts.
//!
//! Why not the Qdrant engine in process (`qdrant-edge`)? Its 0.8 and 0.9 releases do not
//! compile on stable Rust (they use the unstable `std::debug_assert_matches`), and the project
//! builds on stable; ARCHITECTURE.md records the measurement. The two stores still share
//! Qdrant's semantics where users see them: the filter language is Qdrant's (`filter.rs`, the
//! same conversion the production client sends), distances are cosine on normalised vectors,
//! and ids are the same UUIDs.
//!
//! Search is exact (a scan, `scan.rs`) below 16,384 points and whenever a filter is given; a
//! larger collection is also kept in an HNSW graph (`hnsw.rs`), which unfiltered searches
//! walk instead of reading all 150 MB of 100,000 × 384 floats (`make bench-vectors` measures
//! both its time and its recall against exact search). The graph lives in memory only: it is
//! rebuilt from the points when a collection loads.
//!
//! On disk, per collection `DIR/<name>/`: `collection.json` (the spec, written atomically) and
//! `points.log`, an append-only log of upserts and deletes (`log.rs`), synced before a write
//! returns and rewritten whole when most of it is dead.

mod hnsw;
mod log;
mod points;
mod scan;
pub mod snapshot;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use serde_json::Value as Json;

use crate::filter::Filter;
use crate::store::{
    CollectionInfo, CollectionSpec, PointSelector, ScoredPoint, StoreError, StoreHealth,
    StoreQuery, StoredPoint, VectorStore,
};

use log::{Frame, PointLog, Record};
use points::Points;

const SPEC_FILE: &str = "collection.json";

pub struct EmbeddedStore {
    dir: PathBuf,
    collections: RwLock<HashMap<String, Arc<Collection>>>,
}

struct Collection {
    spec: CollectionSpec,
    points: RwLock<Points>,
    log: Mutex<PointLog>,
    /// Set (under the log's lock) when the collection is deleted: a write that was already
    /// on its way finds it and stops, instead of writing into a directory that is gone or
    /// belongs to a new collection of the same name.
    deleted: AtomicBool,
}

impl EmbeddedStore {
    /// Opens (creating) the directory and loads every collection in it.
    pub fn open(dir: impl Into<PathBuf>) -> Result<EmbeddedStore, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, &e))?;
        let mut collections = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io("read", &dir, &e))? {
            let path = entry.map_err(|e| io("read", &dir, &e))?.path();
            if !path.join(SPEC_FILE).is_file() {
                continue;
            }
            let collection = Collection::load(&path)?;
            collections.insert(collection.spec.name.clone(), Arc::new(collection));
        }
        Ok(EmbeddedStore {
            dir,
            collections: RwLock::new(collections),
        })
    }

    fn get(&self, name: &str) -> Result<Arc<Collection>, StoreError> {
        read(&self.collections)
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(name.to_string()))
    }

    fn info(collection: &Collection) -> CollectionInfo {
        CollectionInfo {
            spec: collection.spec.clone(),
            points_count: read(&collection.points).len() as u64,
        }
    }
}

impl Collection {
    fn load(path: &Path) -> Result<Collection, StoreError> {
        let spec_path = path.join(SPEC_FILE);
        let text = std::fs::read_to_string(&spec_path).map_err(|e| io("read", &spec_path, &e))?;
        let spec = spec_from_json(&text)
            .map_err(|e| StoreError::Internal(format!("{}: {e}", spec_path.display())))?;
        // The directory is the collection's name: a spec naming another is not trusted.
        if path.file_name().and_then(|n| n.to_str()) != Some(spec.name.as_str()) {
            return Err(StoreError::Internal(format!(
                "{} names collection {:?}, not its directory's",
                spec_path.display(),
                spec.name
            )));
        }
        let dims = spec.dimensions as usize;
        let mut points = Points::new(dims);
        let mut wrong_size = 0u64;
        let log = PointLog::open(&path.join(log::LOG_FILE), |record| match record {
            Record::Upsert(p) if p.vector.len() != dims => wrong_size += 1,
            Record::Upsert(p) => points.upsert(p.id, &p.vector, p.payload),
            Record::Delete(id) => points.remove(&id),
        })?;
        points.maintain_index();
        if wrong_size > 0 {
            tracing::warn!(collection = %spec.name, wrong_size, "vector log records of the wrong size skipped");
        }
        Ok(Collection {
            spec,
            points: RwLock::new(points),
            log: Mutex::new(log),
            deleted: AtomicBool::new(false),
        })
    }
}

#[async_trait::async_trait]
impl VectorStore for EmbeddedStore {
    async fn create_collection(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        let mut collections = write(&self.collections);
        if collections.contains_key(&spec.name) {
            return Err(StoreError::AlreadyExists(spec.name.clone()));
        }
        let path = self.dir.join(&spec.name);
        // A directory left by a crashed delete is garbage, not a collection; one that cannot
        // be cleared must not lend its old log to the new collection.
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("clear", &path, &e));
            }
            _ => {}
        }
        std::fs::create_dir_all(&path).map_err(|e| io("create", &path, &e))?;
        log::sync_dir(&path)?;
        let log = PointLog::open(&path.join(log::LOG_FILE), |_| {})?;
        write_atomically(&path.join(SPEC_FILE), spec_to_json(spec).as_bytes())?;
        let collection = Collection {
            spec: spec.clone(),
            points: RwLock::new(Points::new(spec.dimensions as usize)),
            log: Mutex::new(log),
            deleted: AtomicBool::new(false),
        };
        collections.insert(spec.name.clone(), Arc::new(collection));
        Ok(())
    }

    async fn list_collections(&self) -> Result<Vec<CollectionInfo>, StoreError> {
        let mut all: Vec<_> = read(&self.collections)
            .values()
            .map(|c| Self::info(c))
            .collect();
        all.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(all)
    }

    async fn collection(&self, name: &str) -> Result<Option<CollectionInfo>, StoreError> {
        Ok(read(&self.collections).get(name).map(|c| Self::info(c)))
    }

    async fn delete_collection(&self, name: &str) -> Result<(), StoreError> {
        let mut collections = write(&self.collections);
        let Some(removed) = collections.remove(name) else {
            return Err(StoreError::NotFound(name.to_string()));
        };
        // Writes in flight hold the log's lock while they write: once it is ours and the flag
        // is set, none will touch the files again.
        let _log = lock(&removed.log);
        removed.deleted.store(true, Ordering::Release);
        let path = self.dir.join(name);
        // The spec goes first: a crash part way leaves no half collection to load.
        let spec = path.join(SPEC_FILE);
        std::fs::remove_file(&spec).map_err(|e| io("remove", &spec, &e))?;
        log::sync_dir(&spec)?;
        std::fs::remove_dir_all(&path).map_err(|e| io("remove", &path, &e))
    }

    async fn upsert(&self, collection: &str, points: Vec<StoredPoint>) -> Result<(), StoreError> {
        let collection = self.get(collection)?;
        let dims = collection.spec.dimensions as usize;
        if let Some(bad) = points.iter().find(|p| p.vector.len() != dims) {
            return Err(StoreError::Invalid(format!(
                "vector of {} dimensions for a collection of {dims}",
                bad.vector.len()
            )));
        }
        tokio::task::spawn_blocking(move || {
            let points: Vec<StoredPoint> = points.into_iter().map(normalised).collect();
            let mut log = lock(&collection.log);
            if collection.deleted.load(Ordering::Acquire) {
                return Err(StoreError::NotFound(collection.spec.name.clone()));
            }
            log.append(points.iter().map(Frame::Upsert))?;
            let mut live = write(&collection.points);
            for p in points {
                live.upsert(p.id, &p.vector, p.payload);
            }
            live.maintain_index();
            log.compact_if_mostly_dead(live.len(), || snapshot(&live))
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    async fn delete_points(
        &self,
        collection: &str,
        selector: PointSelector,
    ) -> Result<(), StoreError> {
        let collection = self.get(collection)?;
        tokio::task::spawn_blocking(move || {
            let mut log = lock(&collection.log);
            if collection.deleted.load(Ordering::Acquire) {
                return Err(StoreError::NotFound(collection.spec.name.clone()));
            }
            let ids = match selector {
                PointSelector::Ids(ids) => ids,
                PointSelector::Filter(filter) => read(&collection.points).matching(&filter),
            };
            log.append(ids.iter().map(|id| Frame::Delete(*id)))?;
            let mut live = write(&collection.points);
            for id in &ids {
                live.remove(id);
            }
            live.maintain_index();
            log.compact_if_mostly_dead(live.len(), || snapshot(&live))
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    async fn search(
        &self,
        collection: &str,
        query: StoreQuery,
    ) -> Result<Vec<ScoredPoint>, StoreError> {
        let collection = self.get(collection)?;
        let dims = collection.spec.dimensions as usize;
        if query.vector.len() != dims {
            return Err(StoreError::Invalid(format!(
                "query vector of {} dimensions for a collection of {dims}",
                query.vector.len()
            )));
        }
        tokio::task::spawn_blocking(move || {
            let live = read(&collection.points);
            Ok(scan::top_k(&live, &query))
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    async fn count(&self, collection: &str, filter: Option<Filter>) -> Result<u64, StoreError> {
        let collection = self.get(collection)?;
        let Some(filter) = filter else {
            return Ok(read(&collection.points).len() as u64);
        };
        // A filter is checked against every point: off the async threads.
        tokio::task::spawn_blocking(move || read(&collection.points).matching(&filter).len() as u64)
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    async fn health(&self) -> StoreHealth {
        let ok = self.dir.is_dir();
        StoreHealth {
            kind: "embedded",
            ok,
            detail: if ok {
                self.dir.display().to_string()
            } else {
                format!("{} is gone", self.dir.display())
            },
        }
    }
}

fn snapshot(live: &Points) -> Vec<StoredPoint> {
    (0..live.len())
        .map(|i| StoredPoint {
            id: live.ids[i],
            vector: live.vectors[i * live.dims..(i + 1) * live.dims].to_vec(),
            payload: live.payloads[i].clone(),
        })
        .collect()
}

/// Cosine on unit vectors is a dot product; a zero vector stays zero and scores 0.
fn normalised(mut p: StoredPoint) -> StoredPoint {
    let norm = p.vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        p.vector.iter_mut().for_each(|v| *v /= norm);
    }
    p
}

fn spec_to_json(spec: &CollectionSpec) -> String {
    serde_json::json!({
        "name": spec.name, "model": spec.model,
        "dimensions": spec.dimensions, "created_at": spec.created_at,
    })
    .to_string()
}

fn spec_from_json(text: &str) -> Result<CollectionSpec, String> {
    let v: Json = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let field = |k: &str| v.get(k).ok_or_else(|| format!("no {k:?}"));
    Ok(CollectionSpec {
        name: field("name")?.as_str().unwrap_or_default().to_string(),
        model: field("model")?.as_str().unwrap_or_default().to_string(),
        dimensions: u32::try_from(field("dimensions")?.as_u64().unwrap_or(0))
            .map_err(|e| e.to_string())?,
        created_at: field("created_at")?.as_i64().unwrap_or(0),
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, bytes).map_err(|e| io("write", &temp, &e))?;
    std::fs::File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("sync", &temp, &e))?;
    std::fs::rename(&temp, path).map_err(|e| io("rename", path, &e))?;
    log::sync_dir(path)
}

pub(crate) fn io(what: &str, path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Internal(format!("cannot {what} {}: {e}", path.display()))
}

// A panic while holding a lock poisons it; the data under it is still whole (every mutation
// is applied after its log write), so the store keeps serving rather than failing forever.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|p| p.into_inner())
}
