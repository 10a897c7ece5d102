//! High-entropy random tokens and their one-way fingerprints. API-key secrets and
//! refresh tokens are random 256-bit strings, so a fast SHA-256 fingerprint is a safe
//! way to store them (a slow password hash is only needed for low-entropy passwords).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// `bytes` random bytes from the OS, URL-safe base64 without padding.
#[must_use]
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Hex SHA-256 of a secret token, for storage and constant-size lookups.
#[must_use]
pub fn fingerprint(secret: &str) -> String {
    fingerprint_bytes(secret.as_bytes())
}

/// Hex SHA-256 of any bytes (also the checksum of uploaded files).
#[must_use]
pub fn fingerprint_bytes(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Compares two strings in time independent of where they differ.
#[must_use]
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_tokens_are_never_the_same() {
        assert_ne!(random_token(32), random_token(32));
        assert_eq!(random_token(32).len(), 43);
    }

    #[test]
    fn a_fingerprint_is_stable_and_hides_the_secret() {
        assert_eq!(fingerprint("abc"), fingerprint("abc"));
        assert_ne!(fingerprint("abc"), fingerprint("abd"));
        assert!(!fingerprint("abc").contains("abc"));
    }
}
