//! Blob storage for uploaded files, implementing the RAG domain's `BlobStore` port on
//! top of the `object_store` crate: a directory on the local filesystem (the default),
//! any S3-compatible service (AWS, MinIO, Ceph, R2, ...) by configuration, or memory.
//!
//! Keys are relative, `/`-separated paths such as `tenant/collection/document`. They
//! are validated here, before any backend sees them, so no key can name something
//! outside the store's root.

mod config;
mod key;
mod store;

pub use config::{BlobConfig, S3Config};
pub use key::InvalidKey;
pub use store::{BlobNotFound, InMemoryBlobStore, ObjectBlobStore};
