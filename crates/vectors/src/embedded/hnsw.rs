//! An HNSW graph (Malkov & Yashunin) over a collection's live vectors, for searches without a
//! filter once a collection is large enough that a full scan costs more than a few
//! milliseconds. Exact scan stays the answer for small collections and for filtered searches,
//! where a graph walk could miss every point the filter allows.
//!
//! Nodes are numbered in insertion order and never move; `Points` moves vectors when it
//! swap-removes, so the graph reads a node's vector through `slot_of`. A replaced or deleted
//! point's node is marked dead: walks still pass through it (the graph stays connected), but
//! it is never an answer. When dead nodes outnumber live ones the graph is rebuilt.

use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashSet},
};

/// Links per node above layer 0, and at layer 0.
const M: usize = 16;
const M0: usize = 2 * M;
const EF_CONSTRUCTION: usize = 64;

#[derive(Clone, Copy, PartialEq)]
struct Scored {
    score: f32,
    node: u32,
}

impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.node.cmp(&self.node))
    }
}

#[derive(Default)]
pub(crate) struct Hnsw {
    /// `links[node][layer]`: the neighbours the node chose when it was inserted, on each
    /// layer it lives on (by `diverse`, and never pruned: they are what keeps the graph one
    /// piece when the data comes in tight groups).
    links: Vec<Vec<Vec<u32>>>,
    /// `back[node][layer]`: later nodes that chose this one, the closest kept.
    back: Vec<Vec<Vec<u32>>>,
    /// Where each node's vector is in `Points` now; `None` once dead.
    slot_of: Vec<Option<usize>>,
    entry: Option<u32>,
    dead: usize,
    rng: u64,
}

/// What the graph needs from the collection: a slot's vector and the similarity of two.
pub(crate) trait VectorsView {
    fn vector(&self, slot: usize) -> &[f32];
}

impl Hnsw {
    pub(crate) fn new() -> Hnsw {
        Hnsw {
            rng: 0x9E37_79B9_7F4A_7C15,
            ..Hnsw::default()
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.slot_of.len() - self.dead
    }

    /// Whether dead nodes are most of the graph: time to rebuild.
    pub(crate) fn mostly_dead(&self) -> bool {
        self.dead > self.live().max(1024)
    }

    /// The node at `slot` is gone (deleted or about to be replaced).
    pub(crate) fn kill(&mut self, node: u32) {
        if let Some(s) = self.slot_of.get_mut(node as usize)
            && s.take().is_some()
        {
            self.dead += 1;
        }
    }

    /// `Points` moved the vector of `node` to `slot`.
    pub(crate) fn moved(&mut self, node: u32, slot: usize) {
        if let Some(s) = self.slot_of.get_mut(node as usize) {
            *s = Some(slot);
        }
    }

    fn level(&mut self) -> usize {
        // xorshift; the level is geometric with ratio 1/M.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let uniform = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        let level = -(uniform.max(f64::MIN_POSITIVE)).ln() / (M as f64).ln();
        (level as usize).min(16)
    }

    fn score(&self, view: &impl VectorsView, q: &[f32], node: u32) -> f32 {
        // A dead node's vector is gone; it still routes with its last links, scored lowest.
        match self.slot_of[node as usize] {
            Some(slot) => super::scan::dot(q, view.vector(slot)),
            None => f32::NEG_INFINITY,
        }
    }

    /// Adds the vector now at `slot`; returns its node.
    pub(crate) fn insert(&mut self, view: &impl VectorsView, slot: usize) -> u32 {
        let node = self.slot_of.len() as u32;
        let level = self.level();
        self.slot_of.push(Some(slot));
        self.links.push(vec![Vec::new(); level + 1]);
        self.back.push(vec![Vec::new(); level + 1]);
        let Some(mut entry) = self.entry else {
            self.entry = Some(node);
            return node;
        };
        let q = view.vector(slot).to_vec();
        let top = self.links[entry as usize].len() - 1;
        for layer in (level + 1..=top).rev() {
            entry = self.greedy(view, &q, entry, layer);
        }
        let mut entries = vec![entry];
        for layer in (0..=level.min(top)).rev() {
            let found = self.layer_search(view, &q, &entries, EF_CONSTRUCTION, layer);
            // Half the links a node may have are its own choice, half come back from others.
            let max = if layer == 0 { M0 } else { M } / 2;
            let chosen = self.diverse(view, &found, max);
            for &n in &chosen {
                self.connect(view, n, node, layer, max);
            }
            self.links[node as usize][layer] = chosen;
            entries = found.iter().map(|s| s.node).collect();
        }
        if level > top {
            self.entry = Some(node);
        }
        node
    }

    /// The paper's neighbour heuristic: walking the candidates best first, keep one only if it
    /// is closer to the new node than to every neighbour kept so far. Plain "closest M" links a
    /// topic's points only to each other, and a walk can then never leave the topic it starts
    /// in; these links reach across. Slots left over go to the best of the rest.
    fn diverse(&self, view: &impl VectorsView, found: &[Scored], max: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(max);
        let mut skipped: Vec<u32> = Vec::new();
        for c in found {
            if kept.len() == max {
                break;
            }
            let Some(slot) = self.slot_of[c.node as usize] else {
                continue;
            };
            let v = view.vector(slot);
            let closer_to_us = kept.iter().all(|&k| self.score(view, v, k) < c.score);
            if closer_to_us {
                kept.push(c.node);
            } else {
                skipped.push(c.node);
            }
        }
        let room = max - kept.len();
        kept.extend(skipped.into_iter().take(room));
        kept
    }

    /// Links `from` to `to` on `layer`, keeping `from`'s `max` closest neighbours (the cheap
    /// rule: the new node's own links, chosen by `diverse`, keep the graph navigable).
    fn connect(&mut self, view: &impl VectorsView, from: u32, to: u32, layer: usize, max: usize) {
        let Some(links) = self.back[from as usize].get(layer) else {
            return;
        };
        if links.len() < max {
            self.back[from as usize][layer].push(to);
            return;
        }
        let Some(slot) = self.slot_of[from as usize] else {
            return;
        };
        // The vector lives in `view`, not in the graph: no copy needed to score against it.
        let base = view.vector(slot);
        let mut all: Vec<Scored> = links
            .iter()
            .chain(std::iter::once(&to))
            .map(|&n| Scored {
                score: self.score(view, base, n),
                node: n,
            })
            .collect();
        all.sort_by(|a, b| b.cmp(a));
        all.truncate(max);
        self.back[from as usize][layer] = all.into_iter().map(|s| s.node).collect();
    }

    fn neighbours(&self, node: u32, layer: usize) -> impl Iterator<Item = u32> + '_ {
        let own = self.links[node as usize]
            .get(layer)
            .map_or(&[][..], Vec::as_slice);
        let back = self.back[node as usize]
            .get(layer)
            .map_or(&[][..], Vec::as_slice);
        own.iter().chain(back).copied()
    }

    fn greedy(&self, view: &impl VectorsView, q: &[f32], mut at: u32, layer: usize) -> u32 {
        let mut best = self.score(view, q, at);
        loop {
            let mut moved = false;
            for n in self.neighbours(at, layer) {
                let s = self.score(view, q, n);
                if s > best {
                    (best, at, moved) = (s, n, true);
                }
            }
            if !moved {
                return at;
            }
        }
    }

    /// The best `ef` nodes reachable from `entries` on `layer`, best first.
    fn layer_search(
        &self,
        view: &impl VectorsView,
        q: &[f32],
        entries: &[u32],
        ef: usize,
        layer: usize,
    ) -> Vec<Scored> {
        let mut seen: HashSet<u32> = entries.iter().copied().collect();
        let mut frontier: BinaryHeap<Scored> = BinaryHeap::new();
        let mut best: BinaryHeap<std::cmp::Reverse<Scored>> = BinaryHeap::new();
        for &e in entries {
            let s = Scored {
                score: self.score(view, q, e),
                node: e,
            };
            frontier.push(s);
            best.push(std::cmp::Reverse(s));
        }
        while best.len() > ef {
            best.pop();
        }
        while let Some(c) = frontier.pop() {
            let worst = best.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
            if c.score < worst && best.len() >= ef {
                break;
            }
            for n in self.neighbours(c.node, layer) {
                if !seen.insert(n) {
                    continue;
                }
                let s = Scored {
                    score: self.score(view, q, n),
                    node: n,
                };
                let worst = best.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
                if best.len() < ef || s.score > worst {
                    frontier.push(s);
                    best.push(std::cmp::Reverse(s));
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        let mut out: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out
    }

    /// The best `k` live slots for `q` (a unit vector) with their scores, searching `ef` wide.
    pub(crate) fn search(
        &self,
        view: &impl VectorsView,
        q: &[f32],
        k: usize,
        ef: usize,
    ) -> Vec<(usize, f32)> {
        let Some(mut entry) = self.entry else {
            return Vec::new();
        };
        let top = self.links[entry as usize].len() - 1;
        for layer in (1..=top).rev() {
            entry = self.greedy(view, q, entry, layer);
        }
        self.layer_search(view, q, &[entry], ef.max(k), 0)
            .into_iter()
            .filter_map(|s| self.slot_of[s.node as usize].map(|slot| (slot, s.score)))
            .take(k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vecs(Vec<Vec<f32>>);

    impl VectorsView for Vecs {
        fn vector(&self, slot: usize) -> &[f32] {
            &self.0[slot]
        }
    }

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
        let mut v: Vec<f32> = (0..dims)
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

    fn exact(vecs: &Vecs, q: &[f32], k: usize, alive: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut all: Vec<(f32, usize)> = (0..vecs.0.len())
            .filter(|&i| alive(i))
            .map(|i| (super::super::scan::dot(q, &vecs.0[i]), i))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        all.into_iter().take(k).map(|x| x.1).collect()
    }

    /// Recall@10 against exact search on 3,000 random vectors, and dead nodes never answer.
    #[test]
    fn finds_the_true_neighbours_and_never_the_dead() {
        let vecs = Vecs((0..3_000).map(|i| unit(i + 1, 16)).collect());
        let mut index = Hnsw::new();
        for slot in 0..vecs.0.len() {
            assert_eq!(index.insert(&vecs, slot) as usize, slot);
        }
        let (mut found, queries) = (0, 50);
        for q in 0..queries {
            let query = unit(100_000 + q, 16);
            let got: HashSet<usize> = index
                .search(&vecs, &query, 10, 64)
                .into_iter()
                .map(|h| h.0)
                .collect();
            found += exact(&vecs, &query, 10, |_| true)
                .iter()
                .filter(|i| got.contains(i))
                .count();
        }
        let recall = found as f64 / (queries * 10) as f64;
        assert!(recall >= 0.9, "recall@10 {recall}");

        for node in (0..3_000).step_by(3) {
            index.kill(node);
        }
        assert_eq!(index.live(), 2_000);
        let query = unit(7, 16);
        let hits = index.search(&vecs, &query, 10, 64);
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(slot, _)| slot % 3 != 0), "{hits:?}");
        let best = exact(&vecs, &query, 1, |i| i % 3 != 0)[0];
        assert_eq!(hits[0].0, best);
    }
}
