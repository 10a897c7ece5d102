//! `BlobStore` over any `object_store` backend, and the constructors that choose one.

use crate::config::{BlobConfig, S3Config};
use crate::key;
use anyhow::Context as _;
use async_trait::async_trait;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use std::path::Path;
use std::sync::Arc;
use trellis_rag::BlobStore;

/// `get` of a key that holds no blob. Callers can tell it from an outage with
/// `err.downcast_ref::<BlobNotFound>()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("blob not found: {key}")]
pub struct BlobNotFound {
    pub key: String,
}

/// Uploaded files in an `object_store` backend: local disk, S3-compatible or memory.
#[derive(Debug, Clone)]
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
}

impl ObjectBlobStore {
    /// Wraps any `object_store` backend (e.g. one configured by hand).
    #[must_use]
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// The backend `config` describes.
    ///
    /// # Errors
    /// When the local root cannot be created, or the S3 settings are incomplete or
    /// malformed (no network call is made here).
    pub fn from_config(config: &BlobConfig) -> anyhow::Result<Self> {
        match config {
            BlobConfig::Local { root } => Self::local(root),
            BlobConfig::S3(s3) => Self::s3(s3),
            BlobConfig::Memory => Ok(Self::in_memory()),
        }
    }

    /// Files under `root`, which is created if missing.
    ///
    /// # Errors
    /// When `root` cannot be created or resolved.
    pub fn local(root: impl AsRef<Path>) -> anyhow::Result<Self> {
        let root = root.as_ref();
        std::fs::create_dir_all(root)
            .with_context(|| format!("failed to create the blob directory {}", root.display()))?;
        let store = LocalFileSystem::new_with_prefix(root)
            .with_context(|| format!("failed to open the blob directory {}", root.display()))?
            // Deleting a tenant's last document then leaves no empty directories behind.
            .with_automatic_cleanup(true);
        Ok(Self::new(Arc::new(store)))
    }

    /// An S3-compatible bucket. Settings left unset come from the `AWS_*` environment
    /// variables, then AWS defaults.
    ///
    /// # Errors
    /// When the bucket name is empty or a setting is malformed.
    pub fn s3(config: &S3Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.bucket.trim().is_empty(),
            "the S3 bucket name is empty"
        );
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_allow_http(config.allow_http);
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(id) = &config.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder
            .build()
            .with_context(|| format!("invalid S3 configuration for bucket {}", config.bucket))?;
        Ok(Self::new(Arc::new(store)))
    }

    /// Blobs in process memory, lost on drop.
    #[must_use]
    pub fn in_memory() -> Self {
        Self::new(Arc::new(InMemory::new()))
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        let path = key::parse(key)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .with_context(|| format!("failed to store blob {key}"))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let path = key::parse(key)?;
        let read = match self.store.get(&path).await {
            Ok(result) => result.bytes().await,
            Err(err) => Err(err),
        };
        match read {
            Ok(bytes) => Ok(Vec::from(bytes)),
            Err(object_store::Error::NotFound { .. }) => Err(BlobNotFound {
                key: key.to_owned(),
            }
            .into()),
            Err(err) => Err(anyhow::Error::new(err).context(format!("failed to read blob {key}"))),
        }
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let path = key::parse(key)?;
        match self.store.delete(&path).await {
            // The port promises idempotence; S3 and memory already behave so, the local
            // filesystem reports the missing file.
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => {
                Err(anyhow::Error::new(err).context(format!("failed to delete blob {key}")))
            }
        }
    }
}

/// Blobs in process memory: the store for tests and the throwaway embedded mode.
#[derive(Debug, Clone)]
pub struct InMemoryBlobStore(ObjectBlobStore);

impl InMemoryBlobStore {
    #[must_use]
    pub fn new() -> Self {
        Self(ObjectBlobStore::in_memory())
    }
}

impl Default for InMemoryBlobStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl BlobStore for InMemoryBlobStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.0.put(key, bytes).await
    }

    async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        self.0.get(key).await
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.0.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InvalidKey;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let name = format!(
                "trellis-blob-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            Self(std::env::temp_dir().join(name))
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn stores(root: &TempRoot) -> Vec<(&'static str, Box<dyn BlobStore>)> {
        vec![
            ("local", Box::new(ObjectBlobStore::local(&root.0).unwrap())),
            ("memory", Box::new(InMemoryBlobStore::new())),
        ]
    }

    #[tokio::test]
    async fn a_stored_blob_reads_back_and_is_gone_after_delete() {
        let root = TempRoot::new();
        for (name, store) in stores(&root) {
            let key = "tenant-a/collection-1/doc-1";
            store.put(key, b"hello blob".to_vec()).await.unwrap();
            assert_eq!(store.get(key).await.unwrap(), b"hello blob", "{name}");

            store.put(key, b"replaced".to_vec()).await.unwrap();
            assert_eq!(store.get(key).await.unwrap(), b"replaced", "{name}");

            store.delete(key).await.unwrap();
            let err = store.get(key).await.unwrap_err();
            assert!(
                err.downcast_ref::<BlobNotFound>().is_some(),
                "{name}: {err:#}"
            );
        }
    }

    #[tokio::test]
    async fn the_local_store_creates_its_root_and_writes_files_under_it() {
        let root = TempRoot::new();
        let nested = root.0.join("does/not/exist/yet");
        let store = ObjectBlobStore::local(&nested).unwrap();
        store.put("t/c/d", b"x".to_vec()).await.unwrap();
        assert_eq!(std::fs::read(nested.join("t/c/d")).unwrap(), b"x");
    }

    #[tokio::test]
    async fn deleting_a_missing_blob_succeeds() {
        let root = TempRoot::new();
        for (name, store) in stores(&root) {
            store
                .delete("tenant/never/stored")
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[tokio::test]
    async fn reading_a_missing_blob_says_not_found() {
        let root = TempRoot::new();
        for (name, store) in stores(&root) {
            let err = store.get("tenant/never/stored").await.unwrap_err();
            assert!(err.to_string().contains("not found"), "{name}: {err:#}");
            assert_eq!(
                err.downcast_ref::<BlobNotFound>().unwrap().key,
                "tenant/never/stored"
            );
        }
    }

    #[tokio::test]
    async fn a_key_escaping_the_root_is_refused_and_writes_nothing() {
        let root = TempRoot::new();
        let inner = root.0.join("blobs");
        let store = ObjectBlobStore::local(&inner).unwrap();
        for key in ["../outside", "/etc/outside", "a/../../outside", "a//b", ""] {
            let err = store.put(key, b"x".to_vec()).await.unwrap_err();
            assert!(
                err.downcast_ref::<InvalidKey>().is_some(),
                "{key:?}: {err:#}"
            );
            assert!(store.get(key).await.is_err());
            assert!(store.delete(key).await.is_err());
        }
        assert!(!root.0.join("outside").exists());
    }

    #[test]
    fn an_s3_store_is_built_from_configuration_without_network_access() {
        let config = BlobConfig::S3(S3Config {
            region: Some("eu-west-1".into()),
            endpoint: Some("http://localhost:9000".into()),
            access_key_id: Some("minio".into()),
            secret_access_key: Some("minio-secret".into()),
            allow_http: true,
            ..S3Config::new("uploads")
        });
        let store = ObjectBlobStore::from_config(&config).unwrap();
        assert!(!format!("{store:?}").contains("minio-secret"));
    }

    #[test]
    fn an_s3_store_without_a_bucket_is_refused() {
        let err = ObjectBlobStore::s3(&S3Config::new(" ")).unwrap_err();
        assert!(err.to_string().contains("bucket"), "{err:#}");
    }
}
