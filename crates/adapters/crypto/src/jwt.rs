//! HS256 JSON Web Tokens for access tokens.
//!
//! A client sends the same access token with every request for the token's lifetime,
//! and checking it (two base64 decodes, two JSON parses and the HMAC) was a fifth of
//! the CPU of `GET /v1/auth/me`. So the claims of tokens that verified are kept, by
//! the whole token text, for as long as they are not expired: a token is accepted
//! from the cache only if it is byte for byte one that verified, and its expiry is
//! checked on every use as it would have been.

use hashlink::LruCache;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use std::sync::{Arc, Mutex};
use trellis_identity::{AccessClaims, TokenSigner};

/// Tokens whose claims are kept. About 0.5 KB each; past this, the least recently
/// used is forgotten (and verified again if it comes back).
const VERIFIED_TOKENS: usize = 4096;

/// Signs and verifies access tokens with one shared secret.
#[derive(Clone)]
pub struct JwtSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    verified: Arc<Mutex<LruCache<Box<str>, AccessClaims>>>,
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
            verified: Arc::new(Mutex::new(LruCache::new(VERIFIED_TOKENS))),
        })
    }

    /// Whether `claims` have expired at `now` (seconds), with the same leeway as a
    /// full check.
    fn expired(&self, claims: &AccessClaims, now: i64) -> bool {
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
        claims.exp.saturating_add(leeway) < now
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
        let now = jsonwebtoken::get_current_timestamp();
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        if let Ok(mut verified) = self.verified.lock() {
            match verified.get(token) {
                Some(claims) if !self.expired(claims, now) => return Some(claims.clone()),
                Some(_) => {
                    verified.remove(token);
                    return None;
                }
                None => {}
            }
        }
        let claims = decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .ok()?
            .claims;
        if let Ok(mut verified) = self.verified.lock() {
            verified.insert(token.into(), claims.clone());
        }
        Some(claims)
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
    fn a_token_checked_again_verifies_to_the_same_claims_until_it_expires() {
        let s = JwtSigner::new(&[7u8; 32]).unwrap();
        let c = claims(60);
        let token = s.sign(&c).unwrap();
        assert_eq!(s.verify(&token), Some(c.clone()));
        assert_eq!(s.verify(&token), Some(c));
        // Kept claims that have expired since (past the leeway) are refused.
        let mut stale = claims(60);
        stale.exp -= 120;
        s.verified
            .lock()
            .unwrap()
            .insert(token.clone().into(), stale);
        assert_eq!(s.verify(&token), None);
        assert_eq!(s.verified.lock().unwrap().len(), 0);
    }

    #[test]
    fn a_token_differing_from_a_verified_one_is_checked_in_full() {
        let s = JwtSigner::new(&[7u8; 32]).unwrap();
        let token = s.sign(&claims(60)).unwrap();
        assert!(s.verify(&token).is_some());
        let mut tampered = token.clone();
        tampered.push('x');
        assert_eq!(s.verify(&tampered), None);
        let forged = JwtSigner::new(&[8u8; 32])
            .unwrap()
            .sign(&claims(60))
            .unwrap();
        assert_eq!(s.verify(&forged), None);
        assert_eq!(s.verified.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(JwtSigner::new(b"short").is_err());
    }
}
