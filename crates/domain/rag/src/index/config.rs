//! Tuning of [`crate::index::VectorIndex`]: the dimension, where exact search ends and the
//! graph begins, the HNSW parameters and when maintenance runs. The defaults are the ones
//! measured in `docs/benchmarks.md` ("RAG in-process index").

use crate::index::IndexError;

/// How a partition is searched exactly (small partitions, graph tails, and graph
/// searches that found fewer than `k` hits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExactKernel {
    /// Scan int8 codes, keep every vector whose error interval can still reach the top k,
    /// re-rank those in f32. Same results as [`ExactKernel::Float`], a quarter of the bytes.
    #[default]
    QuantizedRerank,
    /// Score every vector in f32: the baseline the benchmark compares with.
    Float,
}

/// Parameters of the HNSW graphs of large partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswConfig {
    /// Links per node on the upper layers; layer 0 keeps twice as many.
    pub m: usize,
    /// Candidate list size while inserting: higher builds slower, finds better links.
    pub ef_construction: usize,
    /// Candidate list size while searching (at least `k` is used).
    pub ef_search: usize,
}

impl Default for HnswConfig {
    /// m = 24, ef_construction = 200, ef_search = 256: the smallest setting that met
    /// recall@10 ≥ 0.98 mean and p5 ≥ 0.95 on the benchmark's isotropic Gaussian data
    /// (m = 16 left p5 at 0.9), which is harder for graphs than real text embeddings.
    fn default() -> Self {
        Self {
            m: 24,
            ef_construction: 200,
            ef_search: 256,
        }
    }
}

/// Configuration of a [`crate::index::VectorIndex`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexConfig {
    /// Length of every embedding in this index (one index per embedding model).
    pub dimension: usize,
    /// Partitions with at most this many live vectors are always searched exactly, so
    /// their recall is 1.0; above it, a partition gets an HNSW graph. The default,
    /// 32 768, is where the int8 exact scan still answered within ~1.2 ms at p99 on the
    /// 2-core benchmark machine; past it a graph search is cheaper.
    pub exact_max: usize,
    pub hnsw: HnswConfig,
    pub exact_kernel: ExactKernel,
    /// A graph partition is rebuilt once deleted-but-linked nodes exceed this fraction
    /// of its nodes (they still cost traversal time and memory).
    pub compact_ratio: f32,
    /// When true, writes do the maintenance they make due (building a graph when a
    /// partition outgrows `exact_max`, linking new vectors into it, compacting) before
    /// they return; the heavy parts run outside the partition lock, so searches go on.
    /// When false, the owner calls [`crate::index::VectorIndex::maintain`], e.g. from a
    /// background task; search results are correct either way.
    pub auto_maintain: bool,
    /// Seeds the HNSW level draws, so builds are reproducible.
    pub seed: u64,
}

impl IndexConfig {
    /// The defaults for `dimension`-long embeddings.
    #[must_use]
    pub fn new(dimension: usize) -> Self {
        Self {
            dimension,
            exact_max: 32_768,
            hnsw: HnswConfig::default(),
            exact_kernel: ExactKernel::default(),
            compact_ratio: 0.2,
            auto_maintain: true,
            seed: 0x7E11_15AA,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), IndexError> {
        if self.dimension == 0 {
            return Err(IndexError::InvalidConfig("dimension must be positive"));
        }
        if self.hnsw.m < 2 {
            return Err(IndexError::InvalidConfig("hnsw.m must be at least 2"));
        }
        if self.hnsw.ef_construction == 0 || self.hnsw.ef_search == 0 {
            return Err(IndexError::InvalidConfig("hnsw ef values must be positive"));
        }
        if !(self.compact_ratio > 0.0 && self.compact_ratio <= 1.0) {
            return Err(IndexError::InvalidConfig("compact_ratio must be in (0, 1]"));
        }
        Ok(())
    }
}
