//! One (tenant, collection) partition: its [`Store`], and an HNSW [`Graph`] once it is
//! large. How it is searched follows from its size at query time:
//!
//! - at most `exact_max` live vectors: an exact scan, whatever else exists;
//! - more: the graph, plus an exact scan of the slots appended since the graph was last
//!   extended (the "tail"), so inserts are searchable at once; if that yields fewer than
//!   k hits (many deletes, a high threshold), an exact scan of everything instead.
//!
//! Without a graph, deletes swap the last slot into the hole; with one, they tombstone
//! the slot, and enough tombstones make the partition due for a rebuild.

use std::collections::HashSet;

use crate::index::exact::search_exact;
use crate::index::hnsw::Graph;
use crate::index::quant::PreparedQuery;
use crate::index::store::Store;
use crate::index::topk::TopK;
use crate::index::{ChunkId, IndexConfig};

/// What a partition needs from maintenance, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    Nothing,
    /// Build a graph from scratch: the partition outgrew exact search, or its graph holds
    /// too many tombstones.
    Rebuild,
    /// It shrank far below `exact_max`: drop the graph and compact.
    Shrink,
    /// Slots appended since the graph was built are not linked into it yet.
    Link,
}

/// Size and shape of one partition, for monitoring and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionStats {
    /// Vectors that searches can return.
    pub live: usize,
    /// Deleted vectors still held as graph waypoints.
    pub tombstones: usize,
    /// Nodes of the HNSW graph (0 when the partition is searched exactly).
    pub graph_nodes: usize,
    /// Vectors appended after the graph was last extended, scanned exactly.
    pub unlinked: usize,
    pub memory_bytes: usize,
}

/// The live vectors of a partition, copied out so a new one can be built without a lock.
#[derive(Debug)]
pub(crate) struct Snapshot {
    ids: Vec<ChunkId>,
    vectors: Vec<f32>,
}

#[derive(Debug)]
pub(crate) struct Partition {
    store: Store,
    graph: Option<Graph>,
    /// Chunk ids written since the snapshot of an in-flight rebuild was taken; `Some`
    /// also means "a rebuild is in flight", so there is never more than one.
    pub rebuild_log: Option<HashSet<ChunkId>>,
}

impl Partition {
    pub fn new(dimension: usize) -> Self {
        Self {
            store: Store::new(dimension),
            graph: None,
            rebuild_log: None,
        }
    }

    pub fn live_len(&self) -> usize {
        self.store.live_len()
    }

    pub fn stats(&self) -> PartitionStats {
        let graph_nodes = self.graph.as_ref().map_or(0, Graph::len);
        PartitionStats {
            live: self.store.live_len(),
            tombstones: self.store.dead(),
            graph_nodes,
            unlinked: if self.graph.is_some() {
                self.store.slots() - graph_nodes
            } else {
                0
            },
            memory_bytes: self.memory_bytes(),
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.store.memory_bytes() + self.graph.as_ref().map_or(0, Graph::memory_bytes)
    }

    fn log(&mut self, id: ChunkId) {
        if let Some(log) = &mut self.rebuild_log {
            log.insert(id);
        }
    }

    /// Stores `v` (unit length, right dimension) for `id`; true if it replaced a vector.
    pub fn upsert(&mut self, id: ChunkId, v: &[f32]) -> bool {
        self.log(id);
        let Some(slot) = self.store.slot(id) else {
            self.store.push(id, v);
            return false;
        };
        match &self.graph {
            // A linked node's links were chosen for its old vector: retire it and append.
            Some(graph) if (slot as usize) < graph.len() => {
                self.store.tombstone(slot);
                self.store.push(id, v);
            }
            _ => self.store.overwrite(slot, v),
        }
        true
    }

    pub fn contains(&self, id: ChunkId) -> bool {
        self.store.slot(id).is_some()
    }

    /// Removes `id`; true if it was there.
    pub fn delete(&mut self, id: ChunkId) -> bool {
        self.log(id);
        let Some(slot) = self.store.slot(id) else {
            return false;
        };
        if self.graph.is_some() {
            self.store.tombstone(slot);
        } else {
            self.store.swap_remove(slot);
        }
        true
    }

    /// The best `k` live vectors scoring at least `min_score`, best first, as
    /// (chunk, score).
    pub fn search(
        &self,
        query: &PreparedQuery,
        k: usize,
        min_score: f32,
        ef: usize,
        config: &IndexConfig,
    ) -> Vec<(ChunkId, f32)> {
        let mut top = TopK::new(k);
        let slots = self.store.slots();
        match &self.graph {
            Some(graph) if self.store.live_len() > config.exact_max => {
                let hits = graph.search(&self.store, query, ef.max(k));
                let out_of_distribution = hits
                    .first()
                    .is_none_or(|best| best.score < graph.ood_floor());
                for hit in hits {
                    if hit.score >= min_score {
                        top.push(hit.score, hit.item);
                    }
                }
                search_exact(
                    &self.store,
                    query,
                    graph.len()..slots,
                    min_score,
                    config.exact_kernel,
                    &mut top,
                );
                // The graph can come up short (deleted waypoints, a threshold above most of
                // what it reached), and is unreliable far from the data (see
                // `Graph::ood_floor`): answer those exactly.
                if out_of_distribution || (top.len() < k && self.store.live_len() > top.len()) {
                    top = TopK::new(k);
                    search_exact(
                        &self.store,
                        query,
                        0..slots,
                        min_score,
                        config.exact_kernel,
                        &mut top,
                    );
                }
            }
            _ => search_exact(
                &self.store,
                query,
                0..slots,
                min_score,
                config.exact_kernel,
                &mut top,
            ),
        }
        top.into_sorted()
            .into_iter()
            .map(|s| (self.store.id(s.item), s.score))
            .collect()
    }

    pub fn due(&self, config: &IndexConfig) -> Due {
        let live = self.store.live_len();
        match &self.graph {
            None if live > config.exact_max => Due::Rebuild,
            None => Due::Nothing,
            Some(_) if live <= config.exact_max / 2 => Due::Shrink,
            Some(graph) if self.store.dead() as f32 > config.compact_ratio * graph.len() as f32 => {
                Due::Rebuild
            }
            Some(graph) if self.store.slots() > graph.len() => Due::Link,
            Some(_) => Due::Nothing,
        }
    }

    /// Links up to `max` tail slots into the graph; returns how many it linked.
    pub fn link_tail(&mut self, max: usize) -> usize {
        let Some(graph) = &mut self.graph else {
            return 0;
        };
        let start = graph.len();
        let end = self.store.slots().min(start + max);
        for slot in start..end {
            // Slots fit in u32 (see `Store::push`).
            graph.insert(&self.store, slot as u32);
        }
        end - start
    }

    /// Drops the graph and compacts the store: exact search from now on.
    pub fn shrink(&mut self) {
        self.graph = None;
        self.store = self.store.compacted();
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut ids = Vec::with_capacity(self.store.live_len());
        let mut vectors = Vec::with_capacity(self.store.live_len() * self.store.dimension());
        for (id, v) in self.store.iter_live() {
            ids.push(id);
            vectors.extend_from_slice(v);
        }
        Snapshot { ids, vectors }
    }

    /// A fresh partition of the snapshot's vectors, with a graph if it is large. This is
    /// the expensive part of a rebuild and runs without any lock.
    pub fn build(snapshot: &Snapshot, config: &IndexConfig) -> Self {
        let dim = config.dimension;
        let mut store = Store::with_capacity(dim, snapshot.ids.len());
        for (id, v) in snapshot.ids.iter().zip(snapshot.vectors.chunks_exact(dim)) {
            store.push(*id, v);
        }
        let graph = (store.live_len() > config.exact_max).then(|| {
            let mut graph = Graph::new(&config.hnsw, config.seed);
            for slot in 0..store.slots() {
                // Slots fit in u32 (see `Store::push`).
                graph.insert(&store, slot as u32);
            }
            graph.calibrate();
            graph
        });
        Self {
            store,
            graph,
            rebuild_log: None,
        }
    }

    /// Brings a freshly built partition up to date with writes the old one took while it
    /// was being built: each touched id ends as it is in `old`.
    pub fn replay(&mut self, old: &Self, touched: &HashSet<ChunkId>) {
        for &id in touched {
            match old.store.slot(id) {
                Some(slot) => {
                    self.upsert(id, old.store.vector(slot));
                }
                None => {
                    self.delete(id);
                }
            }
        }
    }
}
