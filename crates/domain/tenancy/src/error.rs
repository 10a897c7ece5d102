//! The tenancy domain's error type.

use trellis_kernel::InvalidValue;

/// Everything a tenancy use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    /// No such tenant (or not visible to the caller).
    #[error("tenant not found")]
    NotFound,
    /// The slug, subdomain or custom domain is taken.
    #[error("{0}")]
    Conflict(String),
    /// Input failed validation.
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    /// The caller lacks the permission.
    #[error("you may not do this")]
    Forbidden,
    /// The tenant exists but is suspended.
    #[error("tenant is suspended")]
    Suspended,
    /// Storage or another dependency failed.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

pub type Result<T, E = TenancyError> = std::result::Result<T, E>;
