//! The content domain's error type. Each variant has a stable machine-readable
//! [`ContentError::code`] that the HTTP layer maps to an RFC 9457 problem type.

use crate::{ProviderError, QuotaScope};
use trellis_kernel::{InvalidPage, InvalidValue, Timestamp};

/// Everything a content use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// No such agent, tool, conversation, message, memory or file in this tenant (or
    /// not one the caller may see: others' conversations and memories are not found,
    /// rather than forbidden, so their existence is not revealed).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A name or key already taken, a stale version, or an action the current state
    /// does not allow (posting in an archived conversation).
    #[error("{0}")]
    Conflict(String),
    /// Input failed validation.
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    /// Paging parameters were refused.
    #[error(transparent)]
    Page(#[from] InvalidPage),
    /// The caller's role lacks the permission.
    #[error("you may not do this")]
    Forbidden,
    /// A token budget is used up; nothing was sent to the model.
    #[error("the {} token budget is used up until {resets_at}", match scope { QuotaScope::Tenant => "tenant's", QuotaScope::User => "user's" })]
    QuotaExceeded {
        scope: QuotaScope,
        limit_tokens: u64,
        used_tokens: u64,
        resets_at: Timestamp,
    },
    /// An uploaded file is larger than allowed.
    #[error("the file is larger than {limit_bytes} bytes")]
    TooLarge { limit_bytes: u64 },
    /// An uploaded file's content is not of a type we accept.
    #[error("unsupported file type: {0}")]
    Unsupported(String),
    /// The model is not in the catalogue, or not allowed for this tenant.
    #[error("model `{0}` is not available")]
    ModelUnavailable(String),
    /// The model provider failed (from `ChatModel` adapters; the answer use case turns
    /// it into a stored error message instead of returning it).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Storage or another dependency failed.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ContentError {
    /// A stable code per variant, for problem types and clients to branch on.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            ContentError::NotFound(_) => "not_found",
            ContentError::Conflict(_) => "conflict",
            ContentError::Invalid(_) | ContentError::Page(_) => "invalid",
            ContentError::Forbidden => "forbidden",
            ContentError::QuotaExceeded { .. } => "quota_exceeded",
            ContentError::TooLarge { .. } => "too_large",
            ContentError::Unsupported(_) => "unsupported",
            ContentError::ModelUnavailable(_) => "model_unavailable",
            ContentError::Provider(_) => "provider_error",
            ContentError::Unexpected(_) => "unexpected",
        }
    }
}

pub type Result<T, E = ContentError> = std::result::Result<T, E>;
