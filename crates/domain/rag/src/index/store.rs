//! The vectors of one partition, by slot: f32 components for exact scores, padded int8
//! codes for the quantised scan, the chunk id, and a liveness flag. Everything is in flat
//! arrays indexed by slot, so a scan streams through memory and the graph stores `u32`s.

use std::collections::HashMap;
use std::mem::size_of;

use crate::index::ChunkId;
use crate::index::quant::{CodeMeta, quantize_into};
use crate::index::simd::padded_dim;

#[derive(Debug)]
pub(crate) struct Store {
    dim: usize,
    padded: usize,
    ids: Vec<ChunkId>,
    slot_of: HashMap<ChunkId, u32>,
    vectors: Vec<f32>,
    codes: Vec<i8>,
    meta: Vec<CodeMeta>,
    live: Vec<bool>,
    dead: usize,
}

impl Store {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            padded: padded_dim(dim),
            ids: Vec::new(),
            slot_of: HashMap::new(),
            vectors: Vec::new(),
            codes: Vec::new(),
            meta: Vec::new(),
            live: Vec::new(),
            dead: 0,
        }
    }

    pub fn with_capacity(dim: usize, n: usize) -> Self {
        let mut store = Self::new(dim);
        store.ids.reserve_exact(n);
        store.slot_of.reserve(n);
        store.vectors.reserve_exact(n * dim);
        store.codes.reserve_exact(n * store.padded);
        store.meta.reserve_exact(n);
        store.live.reserve_exact(n);
        store
    }

    pub fn dimension(&self) -> usize {
        self.dim
    }

    /// Slots in use, live or not.
    pub fn slots(&self) -> usize {
        self.ids.len()
    }

    pub fn live_len(&self) -> usize {
        self.ids.len() - self.dead
    }

    pub fn dead(&self) -> usize {
        self.dead
    }

    #[cfg(test)]
    pub fn padded_dim(&self) -> usize {
        self.padded
    }

    pub fn slot(&self, id: ChunkId) -> Option<u32> {
        self.slot_of.get(&id).copied()
    }

    pub fn id(&self, slot: u32) -> ChunkId {
        self.ids[slot as usize]
    }

    pub fn is_live(&self, slot: u32) -> bool {
        self.live[slot as usize]
    }

    pub fn live_flags(&self) -> &[bool] {
        &self.live
    }

    pub fn vector(&self, slot: u32) -> &[f32] {
        let start = slot as usize * self.dim;
        &self.vectors[start..start + self.dim]
    }

    /// The f32 rows of slots `start..end`, back to back.
    pub fn vectors(&self, start: usize, end: usize) -> &[f32] {
        &self.vectors[start * self.dim..end * self.dim]
    }

    /// The padded int8 rows of slots `start..end`, back to back.
    pub fn codes(&self, start: usize, end: usize) -> &[i8] {
        &self.codes[start * self.padded..end * self.padded]
    }

    pub fn meta(&self, slot: usize) -> CodeMeta {
        self.meta[slot]
    }

    /// Appends `v` (unit length, `dim` long) as a live slot for `id`; the caller has made
    /// sure `id` has no live slot yet.
    pub fn push(&mut self, id: ChunkId, v: &[f32]) -> u32 {
        // Slots are u32 to halve the graph's links; a partition of 4 billion vectors
        // would need 6 TB of RAM at 384 dimensions, far beyond one process.
        let slot = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.ids.push(id);
        self.slot_of.insert(id, slot);
        self.vectors.extend_from_slice(v);
        self.meta.push(quantize_into(v, &mut self.codes));
        self.live.push(true);
        slot
    }

    /// Replaces the vector of a live slot in place.
    pub fn overwrite(&mut self, slot: u32, v: &[f32]) {
        let s = slot as usize;
        self.vectors[s * self.dim..(s + 1) * self.dim].copy_from_slice(v);
        let mut codes = Vec::with_capacity(self.padded);
        self.meta[s] = quantize_into(v, &mut codes);
        self.codes[s * self.padded..(s + 1) * self.padded].copy_from_slice(&codes);
    }

    /// Marks a slot deleted but keeps its data, because a graph may route through it.
    pub fn tombstone(&mut self, slot: u32) {
        let s = slot as usize;
        if self.live[s] {
            self.live[s] = false;
            self.dead += 1;
            let id = self.ids[s];
            if self.slot_of.get(&id) == Some(&slot) {
                self.slot_of.remove(&id);
            }
        }
    }

    /// Deletes a slot by moving the last slot into it: O(dim), keeps the arrays dense.
    /// Only for partitions without a graph (slot numbers change) and without tombstones.
    pub fn swap_remove(&mut self, slot: u32) {
        let s = slot as usize;
        let last = self.ids.len() - 1;
        self.slot_of.remove(&self.ids[s]);
        if s != last {
            let moved = self.ids[last];
            self.ids[s] = moved;
            self.slot_of.insert(moved, slot);
            self.vectors
                .copy_within(last * self.dim..(last + 1) * self.dim, s * self.dim);
            self.codes.copy_within(
                last * self.padded..(last + 1) * self.padded,
                s * self.padded,
            );
            self.meta[s] = self.meta[last];
            self.live[s] = self.live[last];
        }
        self.ids.pop();
        self.vectors.truncate(last * self.dim);
        self.codes.truncate(last * self.padded);
        self.meta.pop();
        self.live.pop();
    }

    /// The live entries in slot order.
    pub fn iter_live(&self) -> impl Iterator<Item = (ChunkId, &[f32])> + '_ {
        (0..self.ids.len())
            .filter(|&s| self.live[s])
            .map(|s| (self.ids[s], &self.vectors[s * self.dim..(s + 1) * self.dim]))
    }

    /// A copy holding only the live slots, renumbered densely.
    pub fn compacted(&self) -> Self {
        let mut fresh = Self::with_capacity(self.dim, self.live_len());
        for (id, v) in self.iter_live() {
            fresh.push(id, v);
        }
        fresh
    }

    /// Heap bytes held, by capacity, including a hash map estimate (key, value and one
    /// control byte per bucket, buckets = capacity·8/7).
    pub fn memory_bytes(&self) -> usize {
        let map_entry = size_of::<ChunkId>() + size_of::<u32>() + 1;
        self.ids.capacity() * size_of::<ChunkId>()
            + self.slot_of.capacity() * map_entry * 8 / 7
            + self.vectors.capacity() * size_of::<f32>()
            + self.codes.capacity()
            + self.meta.capacity() * size_of::<CodeMeta>()
            + self.live.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> ChunkId {
        ChunkId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn swap_remove_moves_the_last_slot_into_the_hole() {
        let mut store = Store::new(2);
        store.push(id(1), &[1.0, 0.0]);
        store.push(id(2), &[0.0, 1.0]);
        store.push(id(3), &[0.6, 0.8]);
        store.swap_remove(0);
        assert_eq!(store.slots(), 2);
        assert_eq!(store.slot(id(3)), Some(0));
        assert_eq!(store.vector(0), &[0.6, 0.8]);
        assert_eq!(store.slot(id(1)), None);
        assert_eq!(store.codes(0, 2).len(), 2 * store.padded_dim());
    }

    #[test]
    fn a_tombstoned_slot_keeps_its_data_but_loses_its_id() {
        let mut store = Store::new(2);
        store.push(id(1), &[1.0, 0.0]);
        store.tombstone(0);
        store.tombstone(0);
        assert_eq!(store.dead(), 1);
        assert_eq!(store.live_len(), 0);
        assert_eq!(store.slot(id(1)), None);
        assert_eq!(store.vector(0), &[1.0, 0.0]);
        assert_eq!(store.compacted().slots(), 0);
    }
}
