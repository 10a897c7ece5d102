//! AES-256-GCM sealing of tenant secrets (LLM API keys). Each ciphertext records the
//! id of the key that sealed it; old keys stay configured for opening until every
//! secret has been re-sealed, which is how keys are rotated.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use std::collections::HashMap;
use trellis_tenancy::{SealedSecret, SecretCipher};

const NONCE_LEN: usize = 12;

/// Why a configured key was refused.
#[derive(Debug, thiserror::Error)]
pub enum CipherKeyError {
    #[error("the encryption key is not valid base64")]
    NotBase64,
    #[error("the encryption key must be 32 bytes, got {0}")]
    WrongLength(usize),
    #[error("a key id must be 1 to 32 letters, digits, '-' or '_'")]
    BadId,
}

/// Seals with the current key; opens with any configured key.
#[derive(Clone)]
pub struct AesGcmCipher {
    current: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for AesGcmCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AesGcmCipher")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

fn parse_key(id: &str, b64: &str) -> Result<Aes256Gcm, CipherKeyError> {
    if id.is_empty()
        || id.len() > 32
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(CipherKeyError::BadId);
    }
    let bytes = STANDARD
        .decode(b64.trim())
        .map_err(|_| CipherKeyError::NotBase64)?;
    Aes256Gcm::new_from_slice(&bytes).map_err(|_| CipherKeyError::WrongLength(bytes.len()))
}

impl AesGcmCipher {
    /// `current` is `(key id, base64 key)`; `retired` are older keys kept for opening.
    ///
    /// # Errors
    /// When any key is not base64 of exactly 32 bytes or an id is malformed.
    pub fn new(
        current: (&str, &str),
        retired: &[(String, String)],
    ) -> Result<Self, CipherKeyError> {
        let mut keys = HashMap::new();
        for (id, b64) in retired {
            keys.insert(id.clone(), parse_key(id, b64)?);
        }
        keys.insert(current.0.to_owned(), parse_key(current.0, current.1)?);
        Ok(Self {
            current: current.0.to_owned(),
            keys,
        })
    }

    /// A cipher with a fresh random key, for the in-memory mode where nothing persists.
    #[must_use]
    pub fn ephemeral() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let mut keys = HashMap::new();
        keys.insert("ephemeral".to_owned(), Aes256Gcm::new(&key.into()));
        Self {
            current: "ephemeral".to_owned(),
            keys,
        }
    }
}

impl SecretCipher for AesGcmCipher {
    fn seal(&self, plaintext: &str, aad: &[u8]) -> anyhow::Result<SealedSecret> {
        let cipher = self
            .keys
            .get(&self.current)
            .ok_or_else(|| anyhow::anyhow!("current key missing"))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad,
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(SealedSecret {
            key_id: self.current.clone(),
            ciphertext: out,
        })
    }

    fn open(&self, sealed: &SealedSecret, aad: &[u8]) -> anyhow::Result<String> {
        let cipher = self.keys.get(&sealed.key_id).ok_or_else(|| {
            anyhow::anyhow!("secret was sealed with unknown key id `{}`", sealed.key_id)
        })?;
        if sealed.ciphertext.len() < NONCE_LEN {
            anyhow::bail!("sealed secret is truncated");
        }
        let (nonce, ct) = sealed.ciphertext.split_at(NONCE_LEN);
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| {
                anyhow::anyhow!("secret failed authentication (wrong key, tenant or tampered)")
            })?;
        Ok(String::from_utf8(plain)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> String {
        STANDARD.encode([b; 32])
    }

    #[test]
    fn a_sealed_secret_opens_only_with_the_same_associated_data() {
        let c = AesGcmCipher::new(("k1", &key(1)), &[]).unwrap();
        let sealed = c.seal("sk-live-123", b"tenant-a").unwrap();
        assert_eq!(c.open(&sealed, b"tenant-a").unwrap(), "sk-live-123");
        assert!(c.open(&sealed, b"tenant-b").is_err());
    }

    #[test]
    fn secrets_sealed_with_a_retired_key_still_open_after_rotation() {
        let old = AesGcmCipher::new(("k1", &key(1)), &[]).unwrap();
        let sealed = old.seal("secret", b"t").unwrap();
        let rotated = AesGcmCipher::new(("k2", &key(2)), &[("k1".into(), key(1))]).unwrap();
        assert_eq!(rotated.open(&sealed, b"t").unwrap(), "secret");
        assert_eq!(rotated.seal("x", b"t").unwrap().key_id, "k2");
    }

    #[test]
    fn a_tampered_ciphertext_is_refused() {
        let c = AesGcmCipher::new(("k1", &key(1)), &[]).unwrap();
        let mut sealed = c.seal("secret", b"t").unwrap();
        if let Some(last) = sealed.ciphertext.last_mut() {
            *last ^= 1;
        }
        assert!(c.open(&sealed, b"t").is_err());
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        assert!(matches!(
            AesGcmCipher::new(("k1", &STANDARD.encode([1u8; 16])), &[]),
            Err(CipherKeyError::WrongLength(16))
        ));
    }
}
