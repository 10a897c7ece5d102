//! The RAG domain's error type.

use trellis_kernel::{InvalidPage, InvalidValue};

/// Everything a RAG use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RagError {
    /// No such collection, document or chunk in this tenant.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// E.g. a collection name already used in this tenant.
    #[error("{0}")]
    Conflict(String),
    /// Input failed validation.
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    /// Paging parameters were refused.
    #[error(transparent)]
    Page(#[from] InvalidPage),
    /// The caller lacks the permission.
    #[error("you may not do this")]
    Forbidden,
    /// The upload is larger than allowed.
    #[error("the file is larger than {limit_bytes} bytes")]
    TooLarge { limit_bytes: u64 },
    /// The file's content is not a type we can extract text from.
    #[error("unsupported file type: {0}")]
    Unsupported(String),
    /// The collection's embedding model is not configured on this server.
    #[error("embedding model `{0}` is not available on this server")]
    ModelUnavailable(String),
    /// Storage, an embedder or another dependency failed.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

pub type Result<T, E = RagError> = std::result::Result<T, E>;
