//! A hierarchical navigable small-world graph (Malkov & Yashunin, 2016) over the slots of
//! a [`Store`]: nodes are slot numbers, vectors stay in the store. Deleted slots stay in
//! the graph as waypoints (a search walks through them but never returns them) until the
//! partition is rebuilt; that keeps deletes O(1) and the graph connected.
//!
//! Written here rather than taken from a crate because the crates we evaluated either
//! cannot delete (`instant-distance` builds once; `hnsw_rs` has no removal) or are C++
//! (`usearch`), and because owning it lets the graph share the partition's storage and
//! SIMD kernels: one copy of each vector, `u32` links in one flat array for layer 0.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::mem::size_of;

use crate::index::HnswConfig;
use crate::index::quant::PreparedQuery;
use crate::index::simd::{dot, dot_i8};
use crate::index::store::Store;
use crate::index::topk::Scored;

/// The int8 estimate of `query · vector(node)`.
#[inline]
fn estimate(store: &Store, query: &PreparedQuery, node: u32) -> f32 {
    let s = node as usize;
    query.estimate(dot_i8(&query.codes, store.codes(s, s + 1)), store.meta(s))
}

/// No node gets more levels than this; with m ≥ 2 the chance of reaching it is < 2⁻¹⁶.
const MAX_LEVEL: usize = 16;

#[derive(Debug)]
pub(crate) struct Graph {
    m: usize,
    m0: usize,
    ef_construction: usize,
    level_mult: f64,
    seed: u64,
    /// Layer 0 of node `i` at `i·(m0+1)`: a count, then up to `m0` neighbours.
    links0: Vec<u32>,
    /// Layers 1..=level of node `i`, each `m+1` long (count, neighbours); empty for most.
    upper: Vec<Vec<u32>>,
    levels: Vec<u8>,
    entry: u32,
    max_level: usize,
    /// Layer-0 nearest-neighbour scores seen while bulk building, for [`Self::calibrate`].
    nearest_scores: Vec<f32>,
    ood_floor: f32,
}

impl Graph {
    pub fn new(config: &HnswConfig, seed: u64) -> Self {
        Self {
            m: config.m,
            m0: 2 * config.m,
            ef_construction: config.ef_construction,
            level_mult: 1.0 / (config.m as f64).ln(),
            seed,
            links0: Vec::new(),
            upper: Vec::new(),
            levels: Vec::new(),
            entry: 0,
            max_level: 0,
            nearest_scores: Vec::new(),
            ood_floor: f32::NEG_INFINITY,
        }
    }

    /// Nodes in the graph: slots `0..len()` of the store.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    fn neighbors(&self, node: u32, level: usize) -> &[u32] {
        let (list, base) = if level == 0 {
            (&self.links0, node as usize * (self.m0 + 1))
        } else {
            (&self.upper[node as usize], (level - 1) * (self.m + 1))
        };
        let count = list[base] as usize;
        &list[base + 1..base + 1 + count]
    }

    fn set_neighbors(&mut self, node: u32, level: usize, neighbors: &[u32]) {
        let (list, base) = if level == 0 {
            (&mut self.links0, node as usize * (self.m0 + 1))
        } else {
            (&mut self.upper[node as usize], (level - 1) * (self.m + 1))
        };
        // At most m0 (or m) by construction of every caller, so the cast is exact.
        list[base] = neighbors.len() as u32;
        list[base + 1..base + 1 + neighbors.len()].copy_from_slice(neighbors);
    }

    /// The level of a new node, from the exponential distribution of the paper; derived
    /// from the seed and the slot so a rebuild of the same data gives the same graph.
    fn random_level(&self, node: u32) -> usize {
        let bits = split_mix(self.seed ^ u64::from(node).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // 53 random bits in (0, 1].
        let uniform = ((bits >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        // Non-negative and capped, so the float-to-int cast is exact enough.
        ((-uniform.ln() * self.level_mult) as usize).min(MAX_LEVEL)
    }

    /// Links slot `node` (the next one: `node == len()`) into the graph.
    pub fn insert(&mut self, store: &Store, node: u32) {
        let level = self.random_level(node);
        self.levels.push(level as u8);
        self.links0.resize(self.links0.len() + self.m0 + 1, 0);
        self.upper.push(if level > 0 {
            vec![0; level * (self.m + 1)]
        } else {
            Vec::new()
        });
        if self.levels.len() == 1 {
            self.entry = node;
            self.max_level = level;
            return;
        }
        let vector = store.vector(node);
        // Walk on int8 estimates (a quarter of the memory traffic), choose links on
        // exact scores.
        let query = PreparedQuery::new(vector);
        let estimate = |n: u32| estimate(store, &query, n);
        let mut entry = Scored {
            score: estimate(self.entry),
            item: self.entry,
        };
        for layer in (level + 1..=self.max_level).rev() {
            entry = self.greedy(&estimate, entry, layer);
        }
        let mut visited = Visited::new(self.len());
        let mut entries = vec![entry];
        for layer in (0..=level.min(self.max_level)).rev() {
            visited.clear();
            let found = self.search_layer(
                &estimate,
                &entries,
                self.ef_construction,
                layer,
                &mut visited,
                None,
            );
            let mut exact: Vec<Scored<u32>> = found
                .iter()
                .map(|s| Scored {
                    score: dot(vector, store.vector(s.item)),
                    item: s.item,
                })
                .collect();
            exact.sort_unstable_by(|a, b| b.cmp(a));
            if layer == 0
                && let Some(nearest) = exact.first()
            {
                self.nearest_scores.push(nearest.score);
            }
            let chosen = self.select(store, &exact, self.m);
            self.set_neighbors(node, layer, &chosen);
            let max_links = if layer == 0 { self.m0 } else { self.m };
            for &neighbor in &chosen {
                self.link(store, neighbor, node, layer, max_links);
            }
            entries = found;
        }
        if level > self.max_level {
            self.entry = node;
            self.max_level = level;
        }
    }

    /// Adds `to` to the links of `from`, re-selecting them when the list is full.
    fn link(&mut self, store: &Store, from: u32, to: u32, layer: usize, max_links: usize) {
        let current = self.neighbors(from, layer);
        if current.contains(&to) {
            return;
        }
        if current.len() < max_links {
            let mut grown = current.to_vec();
            grown.push(to);
            self.set_neighbors(from, layer, &grown);
            return;
        }
        let base = store.vector(from);
        let mut candidates: Vec<Scored<u32>> = current
            .iter()
            .chain(std::iter::once(&to))
            .map(|&c| Scored {
                score: dot(base, store.vector(c)),
                item: c,
            })
            .collect();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        let chosen = self.select(store, &candidates, max_links);
        self.set_neighbors(from, layer, &chosen);
    }

    /// The neighbour heuristic of the paper (its algorithm 4): walk the candidates best
    /// first and keep one only if it is closer to the base than to every one kept so far.
    /// On clustered data this keeps links into other clusters, which plain "m nearest"
    /// drops, and those are what let a search leave a cluster.
    fn select(&self, store: &Store, candidates: &[Scored<u32>], m: usize) -> Vec<u32> {
        let mut chosen: Vec<u32> = Vec::with_capacity(m);
        for candidate in candidates {
            if chosen.len() >= m {
                break;
            }
            let v = store.vector(candidate.item);
            if chosen
                .iter()
                .all(|&kept| dot(v, store.vector(kept)) < candidate.score)
            {
                chosen.push(candidate.item);
            }
        }
        chosen
    }

    /// Hill-climbs one layer from `current` to a local best.
    fn greedy(
        &self,
        score: &impl Fn(u32) -> f32,
        mut current: Scored<u32>,
        layer: usize,
    ) -> Scored<u32> {
        loop {
            let mut moved = false;
            for &n in self.neighbors(current.item, layer) {
                let s = score(n);
                if s > current.score {
                    current = Scored { score: s, item: n };
                    moved = true;
                }
            }
            if !moved {
                return current;
            }
        }
    }

    /// The `ef` best nodes by `score` that `accept` takes (all when `None`), best first.
    /// Rejected nodes are still expanded, so the walk goes through deleted slots.
    fn search_layer(
        &self,
        score: &impl Fn(u32) -> f32,
        entries: &[Scored<u32>],
        ef: usize,
        layer: usize,
        visited: &mut Visited,
        accept: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Scored<u32>> {
        let accepts = |n: u32| accept.is_none_or(|f| f(n));
        let mut frontier: BinaryHeap<Scored<u32>> = BinaryHeap::with_capacity(ef * 2);
        let mut best: BinaryHeap<Reverse<Scored<u32>>> = BinaryHeap::with_capacity(ef + 1);
        for &e in entries {
            if visited.insert(e.item) {
                frontier.push(e);
                if accepts(e.item) {
                    best.push(Reverse(e));
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        while let Some(current) = frontier.pop() {
            let worst = best.peek().map(|Reverse(w)| w.score);
            if best.len() >= ef && worst.is_some_and(|w| current.score < w) {
                break;
            }
            for &n in self.neighbors(current.item, layer) {
                if !visited.insert(n) {
                    continue;
                }
                let s = score(n);
                let bar = best.peek().map_or(f32::NEG_INFINITY, |Reverse(w)| w.score);
                if best.len() < ef || s > bar {
                    let scored = Scored { score: s, item: n };
                    frontier.push(scored);
                    if accepts(n) {
                        best.push(Reverse(scored));
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            }
        }
        best.into_sorted_vec()
            .into_iter()
            .map(|Reverse(s)| s)
            .collect()
    }

    /// The live nodes the search reaches with a candidate list of `ef`, with exact f32
    /// scores, best first (up to `ef` of them). The walk itself ranks by int8 estimates;
    /// the final list is re-scored exactly, which is what fixes the order of the top k.
    pub fn search(&self, store: &Store, query: &PreparedQuery, ef: usize) -> Vec<Scored<u32>> {
        if self.levels.is_empty() {
            return Vec::new();
        }
        let estimate = |n: u32| estimate(store, query, n);
        let mut entry = Scored {
            score: estimate(self.entry),
            item: self.entry,
        };
        for layer in (1..=self.max_level).rev() {
            entry = self.greedy(&estimate, entry, layer);
        }
        let mut visited = Visited::new(self.len());
        let live = |n: u32| store.is_live(n);
        let found = self.search_layer(&estimate, &[entry], ef, 0, &mut visited, Some(&live));
        let mut exact: Vec<Scored<u32>> = found
            .into_iter()
            .map(|s| Scored {
                score: dot(&query.vector, store.vector(s.item)),
                item: s.item,
            })
            .collect();
        exact.sort_unstable_by(|a, b| b.cmp(a));
        exact
    }

    /// Ends a bulk build: fixes [`Self::ood_floor`] from the nearest-neighbour scores the
    /// inserts saw, ignoring the first half (few points to be near to yet).
    pub fn calibrate(&mut self) {
        let half = self.nearest_scores.len() / 2;
        let mut scores = self.nearest_scores.split_off(half);
        self.nearest_scores = Vec::new();
        if scores.len() < 100 {
            return;
        }
        scores.sort_unstable_by(f32::total_cmp);
        self.ood_floor = scores[scores.len() / 100];
    }

    /// A query whose best hit scores below this is further from the data than 99 % of
    /// the data is from its own nearest neighbour: out of distribution, where a graph walk
    /// is least reliable (it settles in one cluster while the true top k is scattered), so
    /// the partition answers it with an exact scan instead.
    pub fn ood_floor(&self) -> f32 {
        self.ood_floor
    }

    pub fn memory_bytes(&self) -> usize {
        self.links0.capacity() * size_of::<u32>()
            + self.upper.capacity() * size_of::<Vec<u32>>()
            + self
                .upper
                .iter()
                .map(|u| u.capacity() * size_of::<u32>())
                .sum::<usize>()
            + self.levels.capacity()
    }
}

/// A bitset of visited nodes; allocated per search (n/8 bytes, 3 KB for 25 000 nodes),
/// so concurrent searches share nothing.
struct Visited(Vec<u64>);

impl Visited {
    fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }

    fn clear(&mut self) {
        self.0.fill(0);
    }

    /// Marks `n`; true if it was not marked before.
    fn insert(&mut self, n: u32) -> bool {
        let (word, bit) = ((n / 64) as usize, n % 64);
        let mask = 1u64 << bit;
        let fresh = self.0[word] & mask == 0;
        self.0[word] |= mask;
        fresh
    }
}

/// SplitMix64: a tiny, well-mixed hash of a 64-bit value.
pub(crate) fn split_mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ChunkId;
    use crate::index::quant::PreparedQuery;
    use crate::index::synth::{SynthConfig, brute_force_top_k};

    #[test]
    fn graph_search_recall_on_a_seeded_clustered_dataset_is_at_least_0_95() {
        let mut config = SynthConfig::new(11, 3_000, 1);
        config.dimension = 32;
        config.queries = 50;
        config.off_topic_fraction = 0.0;
        let data = config.generate();
        let tenant = &data.tenants[0];
        let mut store = Store::new(data.dimension);
        let mut graph = Graph::new(
            &HnswConfig {
                m: 16,
                ef_construction: 100,
                ef_search: 100,
            },
            5,
        );
        for i in 0..tenant.len() {
            let slot = store.push(tenant.chunks[i], tenant.vector(i));
            graph.insert(&store, slot);
        }
        let k = 10;
        let mut found = 0;
        for query in &data.queries {
            let truth: Vec<ChunkId> = brute_force_top_k(tenant, &query.vector, k)
                .iter()
                .map(|n| n.chunk)
                .collect();
            let hits = graph.search(&store, &PreparedQuery::new(&query.vector), 100);
            found += hits
                .iter()
                .take(k)
                .filter(|h| truth.contains(&store.id(h.item)))
                .count();
        }
        let recall = found as f64 / (k * data.queries.len()) as f64;
        assert!(recall >= 0.95, "recall {recall}");
    }

    #[test]
    fn deleted_nodes_are_walked_through_but_never_returned() {
        let mut config = SynthConfig::new(3, 1_000, 1);
        config.dimension = 32;
        let data = config.generate();
        let tenant = &data.tenants[0];
        let mut store = Store::new(data.dimension);
        let mut graph = Graph::new(&HnswConfig::default(), 1);
        for i in 0..tenant.len() {
            let slot = store.push(tenant.chunks[i], tenant.vector(i));
            graph.insert(&store, slot);
        }
        for slot in (0..1_000).step_by(2) {
            store.tombstone(slot);
        }
        let hits = graph.search(&store, &PreparedQuery::new(&data.queries[0].vector), 50);
        assert_eq!(hits.len(), 50);
        assert!(hits.iter().all(|h| h.item % 2 == 1));
    }

    #[test]
    fn level_draws_follow_the_geometric_law() {
        let graph = Graph::new(
            &HnswConfig {
                m: 16,
                ef_construction: 10,
                ef_search: 10,
            },
            9,
        );
        let above_zero = (0..10_000).filter(|&n| graph.random_level(n) > 0).count();
        // P(level > 0) = 1/m = 1/16: 625 expected.
        assert!((500..750).contains(&above_zero), "{above_zero}");
    }
}
