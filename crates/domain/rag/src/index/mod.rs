//! The in-process vector index: embeddings of every tenant's chunks, partitioned by
//! (tenant, collection), searched by cosine similarity. Pure Rust, no I/O.
//!
//! - Small partitions (up to [`IndexConfig::exact_max`] live vectors, 32 768 by default)
//!   are searched exactly: an int8 pre-scan bounds every score, and only vectors that can
//!   still make the top k are re-scored in f32, so results equal a full f32 scan.
//! - Larger partitions get an HNSW graph, plus an exact scan of vectors not linked yet,
//!   plus an exact fallback when the graph comes up short of k or the query lies far
//!   from all of the partition's data (where graph walks miss most of the top k).
//! - Writes are visible to the next search; deletes are honoured at once (tombstones in
//!   graphs, rebuilt away off-lock once they pile up).
//!
//! Figures and the reasons for each choice: `docs/benchmarks.md`, "RAG in-process index".

mod config;
mod embedding;
mod error;
mod exact;
mod hnsw;
mod ids;
mod partition;
mod quant;
pub mod simd;
mod store;
#[cfg(any(test, feature = "synth"))]
pub mod synth;
mod topk;
mod vector_index;

pub use config::{ExactKernel, HnswConfig, IndexConfig};
pub use embedding::{Embedding, InvalidEmbedding};
pub use error::IndexError;
pub use ids::{ChunkId, CollectionId};
pub use partition::PartitionStats;
pub use vector_index::{Hit, IndexStats, VectorIndex};
