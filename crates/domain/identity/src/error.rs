//! The identity domain's error type.

use trellis_kernel::{InvalidPage, InvalidValue};

/// Everything an identity use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No such user, key or membership in this tenant.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// E.g. the email is already used in this tenant.
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
    /// Credentials or token missing, wrong, expired, revoked or reused.
    #[error("invalid credentials")]
    Unauthenticated,
    /// Too many failed logins; try again after this many seconds.
    #[error("too many failed attempts; retry in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    /// The tenant's user limit is reached.
    #[error("this tenant has reached its user limit of {0}")]
    LimitReached(u32),
    /// Storage or another dependency failed.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<trellis_tenancy::TenancyError> for IdentityError {
    fn from(e: trellis_tenancy::TenancyError) -> Self {
        use trellis_tenancy::TenancyError as T;
        match e {
            T::NotFound => IdentityError::NotFound("tenant"),
            T::Conflict(m) => IdentityError::Conflict(m),
            T::Invalid(v) => IdentityError::Invalid(v),
            T::Forbidden => IdentityError::Forbidden,
            T::Suspended => IdentityError::Unauthenticated,
            T::Unexpected(e) => IdentityError::Unexpected(e),
        }
    }
}

pub type Result<T, E = IdentityError> = std::result::Result<T, E>;
