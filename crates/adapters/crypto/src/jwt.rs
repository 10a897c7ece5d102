//! HS256 JSON Web Tokens for access tokens.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use trellis_identity::{AccessClaims, TokenSigner};

/// Signs and verifies access tokens with one shared secret.
#[derive(Clone)]
pub struct JwtSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner").finish_non_exhaustive()
    }
}

/// Shorter secrets make HS256 brute-forceable.
pub const MIN_SECRET_BYTES: usize = 32;

impl JwtSigner {
    /// # Errors
    /// When the secret is shorter than [`MIN_SECRET_BYTES`].
    pub fn new(secret: &[u8]) -> anyhow::Result<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            anyhow::bail!("the JWT secret must be at least {MIN_SECRET_BYTES} bytes");
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }
}

impl TokenSigner for JwtSigner {
    fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        Ok(encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    fn verify(&self, token: &str) -> Option<AccessClaims> {
        decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_kernel::Role;

    fn claims(exp_offset: i64) -> AccessClaims {
        let now = chrono::Utc::now().timestamp();
        AccessClaims {
            sub: uuid::Uuid::now_v7(),
            tid: Some(uuid::Uuid::now_v7()),
            role: Role::User,
            guest: false,
            iat: now,
            exp: now + exp_offset,
        }
    }

    #[test]
    fn a_signed_token_verifies_to_the_same_claims() {
        let s = JwtSigner::new(&[7u8; 32]).unwrap();
        let c = claims(60);
        assert_eq!(s.verify(&s.sign(&c).unwrap()), Some(c));
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let s = JwtSigner::new(&[7u8; 32]).unwrap();
        assert_eq!(s.verify(&s.sign(&claims(-60)).unwrap()), None);
    }

    #[test]
    fn a_tampered_token_is_rejected() {
        let s = JwtSigner::new(&[7u8; 32]).unwrap();
        let other = JwtSigner::new(&[8u8; 32]).unwrap();
        let token = other.sign(&claims(60)).unwrap();
        assert_eq!(s.verify(&token), None);
        let mut t = s.sign(&claims(60)).unwrap();
        t.push('x');
        assert_eq!(s.verify(&t), None);
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(JwtSigner::new(b"short").is_err());
    }
}
