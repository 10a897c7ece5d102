//! Where blobs live, as the app's configuration describes it. Plain data: building the
//! store from it happens in `ObjectBlobStore::from_config`.

use std::fmt;
use std::path::PathBuf;

/// Which backend stores blobs.
#[derive(Clone, PartialEq, Eq)]
pub enum BlobConfig {
    /// Files under `root` (created if missing). The default for a single server.
    Local { root: PathBuf },
    /// An S3-compatible bucket.
    S3(S3Config),
    /// Process memory: lost on restart. For tests and the throwaway embedded mode.
    Memory,
}

/// An S3-compatible bucket. Settings left unset fall back to the standard `AWS_*`
/// environment variables, then to AWS defaults.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// `AWS_REGION`, else `us-east-1`, when unset (what most S3-compatible servers
    /// accept).
    pub region: Option<String>,
    /// The service URL for non-AWS servers (`http://localhost:9000` for MinIO); AWS's
    /// regional endpoint when unset.
    pub endpoint: Option<String>,
    /// Static credentials. When unset, the standard AWS sources are tried instead
    /// (`AWS_*` environment variables, web identity token, ECS task role, EC2 instance
    /// metadata), so a pod or instance role works without configuration.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allows a plain `http://` endpoint (local MinIO); off by default.
    pub allow_http: bool,
}

impl S3Config {
    /// A bucket on AWS with default settings.
    #[must_use]
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            region: None,
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
        }
    }
}

// Written by hand so that logging the configuration never prints the secret key.
impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl fmt::Debug for BlobConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { root } => f.debug_struct("Local").field("root", root).finish(),
            Self::S3(s3) => f.debug_tuple("S3").field(s3).finish(),
            Self::Memory => f.write_str("Memory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_secret_key() {
        let config = BlobConfig::S3(S3Config {
            secret_access_key: Some("hunter2-very-secret".into()),
            ..S3Config::new("uploads")
        });
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("uploads") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
