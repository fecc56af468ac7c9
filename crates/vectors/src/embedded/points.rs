//! A collection's live points, laid out for the scan (vector `i` is
//! `vectors[i * dims..(i + 1) * dims]`, unit length), with an HNSW graph over them once there
//! are `INDEX_FROM` of them.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use super::hnsw::{Hnsw, VectorsView};
use crate::filter::{Filter, PointId};

/// From this many points a search without a filter walks the graph instead of scanning all:
/// below it a scan takes under about 2 ms here (17 ms per 100,000 on one core).
pub(crate) const INDEX_FROM: usize = 16_384;

#[derive(Default)]
pub(crate) struct Points {
    pub(super) dims: usize,
    pub(super) ids: Vec<uuid::Uuid>,
    pub(super) vectors: Vec<f32>,
    pub(super) payloads: Vec<Map<String, Json>>,
    slot: HashMap<uuid::Uuid, usize>,
    pub(super) index: Option<Hnsw>,
    /// Each slot's graph node, while there is a graph.
    node_of: Vec<u32>,
    /// `INDEX_FROM`, lower in tests.
    index_from: usize,
}

/// The flat vectors, borrowed apart from the graph so the graph can be changed while it reads.
struct Flat<'a> {
    dims: usize,
    vectors: &'a [f32],
}

impl VectorsView for Flat<'_> {
    fn vector(&self, slot: usize) -> &[f32] {
        &self.vectors[slot * self.dims..(slot + 1) * self.dims]
    }
}

impl VectorsView for Points {
    fn vector(&self, slot: usize) -> &[f32] {
        &self.vectors[slot * self.dims..(slot + 1) * self.dims]
    }
}

impl Points {
    pub(super) fn new(dims: usize) -> Points {
        Points {
            dims,
            index_from: INDEX_FROM,
            ..Points::default()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(super) fn upsert(&mut self, id: uuid::Uuid, vector: &[f32], payload: Map<String, Json>) {
        let slot = match self.slot.get(&id) {
            Some(&i) => {
                self.vectors[i * self.dims..(i + 1) * self.dims].copy_from_slice(vector);
                self.payloads[i] = payload;
                // The old node sits where the old vector was: retire it, link a new one.
                if let Some(index) = &mut self.index {
                    index.kill(self.node_of[i]);
                }
                i
            }
            None => {
                self.slot.insert(id, self.ids.len());
                self.ids.push(id);
                self.vectors.extend_from_slice(vector);
                self.payloads.push(payload);
                self.node_of.push(0);
                self.ids.len() - 1
            }
        };
        let flat = Flat {
            dims: self.dims,
            vectors: &self.vectors,
        };
        if let Some(index) = &mut self.index {
            self.node_of[slot] = index.insert(&flat, slot);
        }
    }

    pub(super) fn remove(&mut self, id: &uuid::Uuid) {
        let Some(i) = self.slot.remove(id) else {
            return;
        };
        let last = self.ids.len() - 1;
        if let Some(index) = &mut self.index {
            index.kill(self.node_of[i]);
            if i != last {
                index.moved(self.node_of[last], i);
            }
        }
        if i != last {
            let moved = self.ids[last];
            self.slot.insert(moved, i);
            let (head, tail) = self.vectors.split_at_mut(last * self.dims);
            head[i * self.dims..(i + 1) * self.dims].copy_from_slice(&tail[..self.dims]);
        }
        self.ids.swap_remove(i);
        self.payloads.swap_remove(i);
        self.node_of.swap_remove(i);
        self.vectors.truncate(last * self.dims);
    }

    /// Builds the graph once the collection is large enough, and rebuilds it when most of its
    /// nodes are dead. Runs after each write batch and after loading.
    pub(super) fn maintain_index(&mut self) {
        let rebuild = self.index.as_ref().is_some_and(Hnsw::mostly_dead);
        let wanted = self.len() >= self.index_from;
        if !wanted {
            self.index = None;
            return;
        }
        if self.index.is_some() && !rebuild {
            return;
        }
        let started = std::time::Instant::now();
        let mut index = Hnsw::new();
        let flat = Flat {
            dims: self.dims,
            vectors: &self.vectors,
        };
        for slot in 0..self.len() {
            self.node_of[slot] = index.insert(&flat, slot);
        }
        tracing::info!(
            points = self.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "vector index built"
        );
        self.index = Some(index);
    }

    pub(super) fn matching(&self, filter: &Filter) -> Vec<uuid::Uuid> {
        (0..self.len())
            .filter(|&i| filter.matches(&PointId::Uuid(self.ids[i]), &self.payloads[i]))
            .map(|i| self.ids[i])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
        let mut v: Vec<f32> = (0..8)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    fn best(p: &Points, q: &[f32]) -> Option<uuid::Uuid> {
        let query = crate::store::StoreQuery {
            vector: q.to_vec(),
            top_k: 1,
            filter: None,
            score_threshold: None,
            with_payload: false,
        };
        super::super::scan::top_k(p, &query).first().map(|h| h.id)
    }

    /// Past the threshold the graph answers, and follows replaced, moved and deleted points.
    #[test]
    fn the_graph_follows_upserts_and_deletes() {
        let mut p = Points::new(8);
        p.index_from = 200;
        let id = |i: u64| uuid::Uuid::from_u128(u128::from(i));
        for i in 0..300 {
            p.upsert(id(i), &unit(i + 1), Map::new());
        }
        p.maintain_index();
        assert!(p.index.is_some());
        // A point's own vector finds it.
        assert_eq!(best(&p, &unit(42)), Some(id(41)));
        // Replaced: the old vector no longer finds it, the new one does.
        p.upsert(id(41), &unit(9_999), Map::new());
        assert_eq!(best(&p, &unit(9_999)), Some(id(41)));
        assert_ne!(best(&p, &unit(42)), Some(id(41)));
        // Deleted (and the last slot moved into its place): never an answer again, while the
        // moved point is still found under its own vector.
        p.remove(&id(7));
        p.maintain_index();
        assert_ne!(best(&p, &unit(8)), Some(id(7)));
        assert_eq!(best(&p, &unit(300)), Some(id(299)));
        // Below the threshold again: back to the scan.
        for i in 0..150 {
            p.remove(&id(i));
        }
        p.maintain_index();
        assert!(p.index.is_none());
        assert_eq!(best(&p, &unit(300)), Some(id(299)));
    }
}
