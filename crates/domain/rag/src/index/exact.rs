//! Exact top-k over a run of slots. The default path scans int8 codes, keeps only the
//! vectors whose error interval (see [`crate::index::quant`]) can still reach the top k,
//! and re-ranks those in f32; the result is the same as scoring every vector in f32.

use std::ops::Range;

use crate::index::ExactKernel;
use crate::index::quant::PreparedQuery;
use crate::index::simd::{dot, scan_f32, scan_i8};
use crate::index::store::Store;
use crate::index::topk::TopK;

/// Slots scored per kernel call: big enough to amortise the dispatch, small enough that
/// the scores stay in L1 while they are filtered.
const BLOCK: usize = 256;

/// Offers every live slot in `range` whose score is at least `min_score` to `out` (which
/// keeps the best `k`), so that afterwards `out` holds the exact top k of what it held
/// before plus this range.
pub(crate) fn search_exact(
    store: &Store,
    query: &PreparedQuery,
    range: Range<usize>,
    min_score: f32,
    kernel: ExactKernel,
    out: &mut TopK<u32>,
) {
    let range = range.start..range.end.min(store.slots());
    if range.is_empty() {
        return;
    }
    match kernel {
        ExactKernel::QuantizedRerank => quantized(store, query, range, min_score, out),
        ExactKernel::Float => float(store, query, range, min_score, out),
    }
}

fn float(
    store: &Store,
    query: &PreparedQuery,
    range: Range<usize>,
    min_score: f32,
    out: &mut TopK<u32>,
) {
    let live = store.live_flags();
    let mut scores = [0.0f32; BLOCK];
    for start in range.clone().step_by(BLOCK) {
        let end = (start + BLOCK).min(range.end);
        let scores = &mut scores[..end - start];
        scan_f32(&query.vector, store.vectors(start, end), scores);
        for (slot, &score) in (start..end).zip(scores.iter()) {
            if score >= min_score && live[slot] {
                // Slots fit in u32 (see `Store::push`).
                out.push(score, slot as u32);
            }
        }
    }
}

fn quantized(
    store: &Store,
    query: &PreparedQuery,
    range: Range<usize>,
    min_score: f32,
    out: &mut TopK<u32>,
) {
    let live = store.live_flags();
    let any_dead = store.dead() > 0;
    // `lower` holds the k best lower bounds seen: k vectors are known to score at least
    // its bar, so a vector whose upper bound is below it cannot be in the top k. What
    // `out` already holds (exact scores) is such a bar too.
    let mut lower = TopK::new(out.k());
    let base_floor = out.bar().map_or(min_score, |bar| bar.max(min_score));
    let mut floor = base_floor;
    let mut candidates: Vec<(f32, u32)> = Vec::new();
    let mut ints = [0i32; BLOCK];
    for start in range.clone().step_by(BLOCK) {
        let end = (start + BLOCK).min(range.end);
        let ints = &mut ints[..end - start];
        scan_i8(&query.codes, store.codes(start, end), ints);
        for (slot, &int_dot) in (start..end).zip(ints.iter()) {
            if any_dead && !live[slot] {
                continue;
            }
            let meta = store.meta(slot);
            let estimate = query.estimate(int_dot, meta);
            let bound = query.bound(meta);
            let upper = estimate + bound;
            if upper < floor {
                continue;
            }
            // Slots fit in u32 (see `Store::push`).
            candidates.push((upper, slot as u32));
            if lower.push(estimate - bound, slot as u32) {
                floor = lower.bar().map_or(base_floor, |bar| bar.max(base_floor));
            }
        }
    }
    // Best upper bound first: once `out` is full and a candidate's upper bound is below
    // its bar, no later candidate can enter either.
    candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    for (upper, slot) in candidates {
        if upper < floor || out.bar().is_some_and(|bar| upper < bar) {
            break;
        }
        let score = dot(&query.vector, store.vector(slot));
        if score >= min_score {
            out.push(score, slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ChunkId;

    fn unit(state: &mut u64, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                (*state % 10_000) as f32 / 5_000.0 - 1.0
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    fn store(n: usize, dim: usize) -> Store {
        let mut state = 42u64;
        let mut store = Store::new(dim);
        for i in 0..n {
            store.push(
                ChunkId::from_uuid(uuid::Uuid::from_u128(i as u128 + 1)),
                &unit(&mut state, dim),
            );
        }
        store
    }

    fn top(
        store: &Store,
        q: &PreparedQuery,
        k: usize,
        min: f32,
        kernel: ExactKernel,
    ) -> Vec<(u32, f32)> {
        let mut out = TopK::new(k);
        search_exact(store, q, 0..store.slots(), min, kernel, &mut out);
        out.into_sorted()
            .into_iter()
            .map(|s| (s.item, s.score))
            .collect()
    }

    #[test]
    fn the_quantised_scan_returns_exactly_the_float_scan_top_k() {
        let dim = 64;
        let store = store(3_000, dim);
        let mut state = 7u64;
        for _ in 0..20 {
            let q = PreparedQuery::new(&unit(&mut state, dim));
            for k in [1, 10, 100] {
                let quantized = top(&store, &q, k, -1.0, ExactKernel::QuantizedRerank);
                let float = top(&store, &q, k, -1.0, ExactKernel::Float);
                assert_eq!(quantized, float);
                assert_eq!(quantized.len(), k);
            }
        }
    }

    #[test]
    fn the_threshold_filters_both_kernels_alike() {
        let dim = 32;
        let store = store(500, dim);
        let q = PreparedQuery::new(&unit(&mut 9u64, dim));
        let quantized = top(&store, &q, 50, 0.2, ExactKernel::QuantizedRerank);
        assert_eq!(quantized, top(&store, &q, 50, 0.2, ExactKernel::Float));
        assert!(quantized.iter().all(|&(_, s)| s >= 0.2));
    }
}
