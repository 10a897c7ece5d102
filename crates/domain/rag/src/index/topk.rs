//! "The best k so far": a min-heap of at most k scored items, whose smallest score is the
//! bar a newcomer must clear. Used by every search path and by the result merge.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// An item with its score. Ordered by score (total order, so NaN cannot corrupt a heap),
/// ties broken towards the smaller item so results are deterministic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored<T> {
    pub score: f32,
    pub item: T,
}

impl<T: Ord> Ord for Scored<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.item.cmp(&self.item))
    }
}

impl<T: Ord> PartialOrd for Scored<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: Ord> PartialEq for Scored<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T: Ord> Eq for Scored<T> {}

#[derive(Debug)]
pub(crate) struct TopK<T> {
    k: usize,
    heap: BinaryHeap<Reverse<Scored<T>>>,
}

impl<T: Ord> TopK<T> {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k.saturating_add(1).min(4096)),
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_full(&self) -> bool {
        self.heap.len() >= self.k
    }

    /// The score to beat once k items are held.
    pub fn bar(&self) -> Option<f32> {
        if self.is_full() {
            self.heap.peek().map(|Reverse(s)| s.score)
        } else {
            None
        }
    }

    /// Offers an item; returns whether it was kept.
    pub fn push(&mut self, score: f32, item: T) -> bool {
        if self.k == 0 {
            return false;
        }
        let candidate = Scored { score, item };
        if self.is_full() {
            match self.heap.peek() {
                Some(Reverse(worst)) if candidate > *worst => {
                    self.heap.pop();
                }
                _ => return false,
            }
        }
        self.heap.push(Reverse(candidate));
        true
    }

    /// The kept items, best first.
    pub fn into_sorted(self) -> Vec<Scored<T>> {
        // `into_sorted_vec` is ascending in `Reverse`, i.e. best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(s)| s)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_k_best_in_descending_order() {
        let mut top = TopK::new(3);
        for (i, s) in [0.1, 0.9, 0.5, 0.7, 0.2, 0.8].into_iter().enumerate() {
            top.push(s, i);
        }
        assert_eq!(top.bar(), Some(0.7));
        let items: Vec<usize> = top.into_sorted().into_iter().map(|s| s.item).collect();
        assert_eq!(items, vec![1, 5, 3]);
    }

    #[test]
    fn a_zero_k_keeps_nothing() {
        let mut top = TopK::new(0);
        assert!(!top.push(1.0, 1));
        assert_eq!(top.len(), 0);
    }

    #[test]
    fn ties_prefer_the_smaller_item() {
        let mut top = TopK::new(1);
        top.push(0.5, 7);
        top.push(0.5, 3);
        assert_eq!(top.into_sorted()[0].item, 3);
    }
}
