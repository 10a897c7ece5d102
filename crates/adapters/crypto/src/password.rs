//! argon2id password hashing, run on the blocking pool because one hash costs tens of
//! milliseconds of CPU.

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use trellis_kernel::{Password, PasswordHash, PasswordHasher};

/// argon2id with configurable cost; `verify(_, None)` checks against a dummy hash so
/// unknown accounts cost the same time as wrong passwords.
#[derive(Clone)]
pub struct Argon2Hasher {
    params: Params,
    dummy: String,
}

impl std::fmt::Debug for Argon2Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Argon2Hasher").finish_non_exhaustive()
    }
}

impl Argon2Hasher {
    /// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    ///
    /// # Errors
    /// Only if the parameters are rejected by the library.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_params(
            Params::DEFAULT_M_COST,
            Params::DEFAULT_T_COST,
            Params::DEFAULT_P_COST,
        )
    }

    /// Cheap parameters for tests, where thousands of hashes would otherwise dominate.
    ///
    /// # Errors
    /// Only if the parameters are rejected by the library.
    pub fn fast_insecure_for_tests() -> anyhow::Result<Self> {
        Self::with_params(256, 1, 1)
    }

    /// # Errors
    /// When the parameters are out of argon2's range.
    pub fn with_params(m_cost: u32, t_cost: u32, p_cost: u32) -> anyhow::Result<Self> {
        let params = Params::new(m_cost, t_cost, p_cost, None)
            .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
        let dummy = hash_with(&params, b"dummy password for timing equalisation")?;
        Ok(Self { params, dummy })
    }
}

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_with(params: &Params, password: &[u8]) -> anyhow::Result<String> {
    argon(params)
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &Password) -> anyhow::Result<PasswordHash> {
        let params = self.params.clone();
        let plain = password.expose().to_owned();
        let phc =
            tokio::task::spawn_blocking(move || hash_with(&params, plain.as_bytes())).await??;
        Ok(PasswordHash::from_phc(phc))
    }

    async fn verify(&self, password: &Password, hash: Option<&PasswordHash>) -> bool {
        let params = self.params.clone();
        let plain = password.expose().to_owned();
        let (target, real) = match hash {
            Some(h) => (h.as_str().to_owned(), true),
            None => (self.dummy.clone(), false),
        };
        let ok = tokio::task::spawn_blocking(move || {
            // Parameters are read from the stored hash, so older costs keep verifying.
            argon(&params)
                .verify_password(plain.as_bytes(), target.as_str())
                .is_ok()
        })
        .await
        .unwrap_or(false);
        ok && real
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let h = Argon2Hasher::fast_insecure_for_tests().unwrap();
        let pw = Password::parse("correct horse").unwrap();
        let hash = h.hash(&pw).await.unwrap();
        assert!(hash.as_str().starts_with("$argon2id$"));
        assert!(h.verify(&pw, Some(&hash)).await);
        assert!(
            !h.verify(&Password::parse("wrong horse").unwrap(), Some(&hash))
                .await
        );
    }

    #[tokio::test]
    async fn verifying_against_no_hash_always_fails() {
        let h = Argon2Hasher::fast_insecure_for_tests().unwrap();
        let pw = Password::parse("dummy password for timing equalisation").unwrap();
        assert!(!h.verify(&pw, None).await);
    }
}
