//! Cryptography behind the domain ports: argon2id password hashing
//! (`PasswordHasher`), HS256 JWT access tokens (`TokenSigner`) and AES-256-GCM sealing
//! of tenant secrets with key ids for rotation (`SecretCipher`).

mod cipher;
mod jwt;
mod password;

pub use cipher::{AesGcmCipher, CipherKeyError};
pub use jwt::JwtSigner;
pub use password::Argon2Hasher;
