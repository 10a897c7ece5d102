//! Passwords: the plain value object with its length rules, the stored hash, and the
//! hashing port (argon2id in the crypto adapter). Shared by tenancy (a new tenant's
//! first admin) and identity (users and logins).

use crate::InvalidValue;
use async_trait::async_trait;
use std::fmt;

/// A plain-text password as typed: 8 to 256 characters. Never logged or serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// # Errors
    /// When shorter than 8 or longer than 256 characters (the upper bound stops
    /// hashing from being used as a denial of service).
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let n = s.chars().count();
        if !(8..=256).contains(&n) {
            return Err(InvalidValue::new("password", "must be 8 to 256 characters"));
        }
        Ok(Self(s.to_owned()))
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A stored password hash in PHC string format.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string read from storage or produced by a hasher.
    #[must_use]
    pub fn from_phc(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(***)")
    }
}

/// Slow, salted password hashing. Async because a real hasher burns tens of
/// milliseconds of CPU and must not block the request executor.
#[async_trait]
pub trait PasswordHasher: Send + Sync + 'static {
    /// # Errors
    /// Only when the hashing library fails.
    async fn hash(&self, password: &Password) -> anyhow::Result<PasswordHash>;

    /// Whether `password` matches `hash`. With `None`, burns the same time as a real
    /// check and returns false, so an unknown user can't be told from a wrong password.
    async fn verify(&self, password: &Password, hash: Option<&PasswordHash>) -> bool;
}
