//! Reciprocal rank fusion: combines ranked lists from different retrievers (vector,
//! full text) whose scores are not comparable, using only ranks:
//! `score(d) = Σ 1 / (k + rank_i(d))`, with the customary `k = 60`.

use crate::Scored;
use crate::index::ChunkId;
use std::collections::HashMap;

/// The damping constant from Cormack, Clarke and Büttcher (2009).
pub const RRF_K: f32 = 60.0;

/// A fused result with the scores each list gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub chunk: ChunkId,
    pub score: f32,
    pub vector_score: Option<f32>,
    pub text_score: Option<f32>,
}

/// Fuses a vector ranking and a text ranking (each best first) into one, best first;
/// ties keep the vector list's order.
#[must_use]
pub fn reciprocal_rank_fusion(vector: &[Scored], text: &[Scored]) -> Vec<Fused> {
    let mut by_chunk: HashMap<ChunkId, Fused> = HashMap::new();
    let mut order: Vec<ChunkId> = Vec::new();
    for (list, is_vector) in [(vector, true), (text, false)] {
        for (rank, s) in list.iter().enumerate() {
            let add = 1.0 / (RRF_K + rank as f32 + 1.0);
            let entry = by_chunk.entry(s.chunk).or_insert_with(|| {
                order.push(s.chunk);
                Fused {
                    chunk: s.chunk,
                    score: 0.0,
                    vector_score: None,
                    text_score: None,
                }
            });
            entry.score += add;
            if is_vector {
                entry.vector_score = Some(s.score);
            } else {
                entry.text_score = Some(s.score);
            }
        }
    }
    let mut fused: Vec<Fused> = order
        .into_iter()
        .filter_map(|c| by_chunk.remove(&c))
        .collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score));
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(chunk: ChunkId, score: f32) -> Scored {
        Scored { chunk, score }
    }

    #[test]
    fn a_chunk_both_retrievers_like_beats_one_only_a_single_retriever_likes() {
        let (a, b, c) = (ChunkId::new(), ChunkId::new(), ChunkId::new());
        let fused = reciprocal_rank_fusion(&[s(a, 0.9), s(b, 0.8)], &[s(c, 12.0), s(b, 3.0)]);
        assert_eq!(fused[0].chunk, b);
        assert_eq!(
            (fused[0].vector_score, fused[0].text_score),
            (Some(0.8), Some(3.0))
        );
        assert_eq!(fused.len(), 3);
    }

    #[test]
    fn with_one_empty_list_the_other_keeps_its_order() {
        let (a, b) = (ChunkId::new(), ChunkId::new());
        let fused = reciprocal_rank_fusion(&[], &[s(a, 2.0), s(b, 1.0)]);
        assert_eq!(
            fused.iter().map(|f| f.chunk).collect::<Vec<_>>(),
            vec![a, b]
        );
        assert!(fused.iter().all(|f| f.vector_score.is_none()));
    }
}
