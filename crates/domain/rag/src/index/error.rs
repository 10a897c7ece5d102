//! What can go wrong when using the index: an embedding of the wrong length, a duplicate
//! insert, or a configuration that cannot work.

use thiserror::Error;

use crate::index::ChunkId;

/// Errors of [`crate::index::VectorIndex`] operations.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IndexError {
    /// The embedding does not have the dimension the index was built for.
    #[error("embedding has {actual} dimensions, the index expects {expected}")]
    DimensionMismatch { expected: usize, actual: usize },
    /// `insert` of a chunk that is already in the collection (`upsert` replaces it).
    #[error("chunk {0} is already indexed in this collection")]
    AlreadyExists(ChunkId),
    /// The configuration is unusable, e.g. a zero dimension.
    #[error("invalid index configuration: {0}")]
    InvalidConfig(&'static str),
}
