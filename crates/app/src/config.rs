//! Configuration from `TRELLIS_*` environment variables and `DATABASE_URL`, layered
//! over defaults. Every setting is documented in `docs/configuration.md`.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use trellis_tenancy::LlmEndpointPolicy;

/// How expensive password hashing is. Only tests lower it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PasswordCost {
    #[default]
    Standard,
    /// Trivially cheap argon2 parameters: never use outside tests.
    InsecureFastForTests,
}

/// How `trellis serve` runs its tasks (`TRELLIS_RUNTIME`).
///
/// `trellis serve` runs `PerCore` unless told otherwise ([`Config::from_env`]). The
/// `Default`, which [`Config::default`] takes, is `Shared`: code that embeds the app
/// builds it inside a runtime of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeSetting {
    /// tokio's multi-threaded runtime: any of its threads runs any task.
    #[default]
    Shared,
    /// This many single-threaded runtimes, one thread each, taking the connections in
    /// turn (`crate::runtimes`). On two cores it served every endpoint as fast or
    /// faster, at less CPU per request, than `Shared` (`docs/benchmarks.md`).
    PerCore(usize),
}

impl RuntimeSetting {
    /// Reads `value` (`shared` or `per-core`; unset is `per-core`); `threads` is how
    /// many runtimes `per-core` runs (`TOKIO_WORKER_THREADS`, else one per core).
    fn parse(value: Option<&str>, threads: usize) -> anyhow::Result<Self> {
        match value.map(str::trim) {
            Some("shared") => Ok(Self::Shared),
            None | Some("per-core") => Ok(Self::PerCore(threads.max(1))),
            Some(other) => {
                bail!("TRELLIS_RUNTIME={other:?} is not valid: `per-core` or `shared`")
            }
        }
    }
}

/// How many threads serve requests: `TOKIO_WORKER_THREADS` (which tokio's default
/// runtime reads too), else one per core.
fn serving_threads() -> anyhow::Result<usize> {
    match var("TOKIO_WORKER_THREADS") {
        Some(v) => positive("TOKIO_WORKER_THREADS", &v),
        None => Ok(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)),
    }
}

/// Everything the app can be told.
#[derive(Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// Listen with `SO_REUSEPORT`, so that several processes share `bind`.
    pub reuse_port: bool,
    /// One shared runtime, or one single-threaded runtime per core.
    pub runtime: RuntimeSetting,
    /// The app's login role. `None` runs on in-memory adapters.
    pub database_url: Option<String>,
    /// The owner role for migrations; defaults to `database_url`.
    pub migration_database_url: Option<String>,
    pub db_max_connections: u32,
    /// Whether hot reads may go over a second, pipelining pool (where no TLS would be
    /// lost; see `PgStore::connect`).
    pub db_pipelined_reads: bool,
    /// The most connections that pool opens; `None`: the store's default, 8 or
    /// `db_max_connections` if smaller (`PgStore::with_pipelined_connections`).
    pub db_pipelined_connections: Option<usize>,
    /// Users kept in process by the Postgres adapter (`PgCachedUsers`); 0: none.
    pub user_cache_max: usize,
    /// Knowledge collections kept in process (`PgCachedCollections`); 0: none.
    pub collection_cache_max: usize,
    /// Tenants' LLM configurations kept in process (`PgCachedTenants`); 0: none.
    pub tenant_cache_max: usize,
    /// MiB of extracted attachment text kept in process for prompts; 0: none.
    pub attachment_cache_mb: usize,
    /// The most messages one conversation may hold (`ContentConfig`).
    pub max_conversation_messages: usize,
    pub jwt_secret: Option<Vec<u8>>,
    /// `(key id, base64 32-byte key)`.
    pub encryption_key: Option<(String, String)>,
    pub retired_encryption_keys: Vec<(String, String)>,
    pub access_token_ttl_secs: i64,
    pub refresh_token_ttl_days: i64,
    pub body_limit_bytes: usize,
    pub cors_allowed_origins: Vec<String>,
    pub password_cost: PasswordCost,
    /// Retrieval: embedders, file storage, upload limit and ingestion workers.
    pub rag: RagSettings,
    /// Where tenants whose LLM provider has no public endpoint (`openai_compatible`,
    /// `azure_openai`) are sent, and an override for `ollama`'s local default
    /// (`TRELLIS_LLM_BASE_URL`), unless the tenant set its own `base_url`.
    pub llm_base_url: Option<String>,
    /// The origins a tenant's own LLM `base_url` may point at
    /// (`TRELLIS_LLM_ALLOWED_ENDPOINTS`, comma-separated, `https://*.openai.azure.com`
    /// style). Empty: tenants cannot set one.
    pub llm_allowed_endpoints: LlmEndpointPolicy,
}

/// Where uploaded files are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobSetting {
    /// In memory (the default without a database).
    Memory,
    /// A local folder.
    Dir(std::path::PathBuf),
    /// An S3-compatible bucket.
    S3 {
        bucket: String,
        region: Option<String>,
        endpoint: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        allow_http: bool,
    },
}

/// Retrieval settings.
#[derive(Debug, Clone)]
pub struct RagSettings {
    /// A sentence-transformers model folder (all-MiniLM-L6-v2 from `cargo xtask fetch-model`).
    pub embed_model_dir: Option<std::path::PathBuf>,
    /// The embedding model new collections get.
    pub embed_default: Option<String>,
    /// An OpenAI-compatible embeddings API.
    pub openai_url: Option<String>,
    pub openai_api_key: Option<String>,
    pub openai_model: Option<String>,
    pub openai_dimension: Option<u32>,
    /// `None`: memory without a database, `.trellis/blobs` with one.
    pub blobs: Option<BlobSetting>,
    pub max_upload_bytes: u64,
    /// Ingestion workers inside `trellis serve`.
    pub workers: usize,
    /// How long a worker holds a job between renewals; a crashed worker's job is
    /// picked up by another this long after its last renewal.
    pub job_lease: std::time::Duration,
    /// Vectors held in the in-process search replica over all tenants (Postgres only;
    /// 0 searches Postgres directly). See `trellis_postgres::PgVectorCache`.
    pub vector_cache_max_vectors: usize,
}

impl Default for RagSettings {
    fn default() -> Self {
        Self {
            embed_model_dir: None,
            embed_default: None,
            openai_url: None,
            openai_api_key: None,
            openai_model: None,
            openai_dimension: None,
            blobs: None,
            max_upload_bytes: 25 * 1024 * 1024,
            workers: 2,
            job_lease: crate::workers::DEFAULT_LEASE,
            vector_cache_max_vectors: trellis_postgres::DEFAULT_MAX_VECTORS,
        }
    }
}

impl RagSettings {
    fn from_env() -> anyhow::Result<Self> {
        let d = Self::default();
        let blobs = if let Some(bucket) = var("TRELLIS_S3_BUCKET") {
            Some(BlobSetting::S3 {
                bucket,
                region: var("TRELLIS_S3_REGION"),
                endpoint: var("TRELLIS_S3_ENDPOINT"),
                access_key_id: var("TRELLIS_S3_ACCESS_KEY_ID"),
                secret_access_key: var("TRELLIS_S3_SECRET_ACCESS_KEY"),
                allow_http: parsed("TRELLIS_S3_ALLOW_HTTP", false)?,
            })
        } else {
            var("TRELLIS_BLOB_DIR").map(|d| BlobSetting::Dir(d.into()))
        };
        Ok(Self {
            embed_model_dir: var("TRELLIS_EMBED_MODEL_DIR").map(Into::into),
            embed_default: var("TRELLIS_EMBED_DEFAULT"),
            openai_url: var("TRELLIS_OPENAI_EMBED_URL"),
            openai_api_key: var("TRELLIS_OPENAI_EMBED_API_KEY"),
            openai_model: var("TRELLIS_OPENAI_EMBED_MODEL"),
            openai_dimension: var("TRELLIS_OPENAI_EMBED_DIMENSION")
                .map(|v| {
                    v.trim()
                        .parse()
                        .context("TRELLIS_OPENAI_EMBED_DIMENSION must be a number")
                })
                .transpose()?,
            blobs,
            max_upload_bytes: parsed("TRELLIS_MAX_UPLOAD_BYTES", d.max_upload_bytes)?,
            workers: parsed("TRELLIS_WORKERS", d.workers)?,
            job_lease: std::time::Duration::from_secs(parsed(
                "TRELLIS_JOB_LEASE_SECS",
                d.job_lease.as_secs(),
            )?)
            .max(std::time::Duration::from_secs(3)),
            vector_cache_max_vectors: parsed(
                "TRELLIS_VECTOR_CACHE_MAX_VECTORS",
                d.vector_cache_max_vectors,
            )?,
        })
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("reuse_port", &self.reuse_port)
            .field("runtime", &self.runtime)
            .field("database", &self.database_url.as_ref().map(|_| "<set>"))
            .field("db_max_connections", &self.db_max_connections)
            .field("db_pipelined_reads", &self.db_pipelined_reads)
            .field("db_pipelined_connections", &self.db_pipelined_connections)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            migration_database_url: None,
            db_max_connections: 16,
            db_pipelined_reads: true,
            reuse_port: false,
            runtime: RuntimeSetting::Shared,
            db_pipelined_connections: None,
            user_cache_max: trellis_postgres::DEFAULT_MAX_CACHED_USERS,
            collection_cache_max: trellis_postgres::DEFAULT_MAX_CACHED_COLLECTIONS,
            tenant_cache_max: trellis_postgres::DEFAULT_MAX_CACHED_TENANTS,
            attachment_cache_mb: 64,
            max_conversation_messages: trellis_content::DEFAULT_MAX_CONVERSATION_MESSAGES,
            jwt_secret: None,
            encryption_key: None,
            retired_encryption_keys: Vec::new(),
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_days: 30,
            body_limit_bytes: 1024 * 1024,
            cors_allowed_origins: Vec::new(),
            password_cost: PasswordCost::Standard,
            rag: RagSettings::default(),
            llm_base_url: None,
            llm_allowed_endpoints: LlmEndpointPolicy::default(),
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parsed<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={v:?} is not valid: {e}")),
    }
}

/// A count of at least one, read from the variable `name`.
fn positive(name: &str, value: &str) -> anyhow::Result<usize> {
    value
        .trim()
        .parse::<std::num::NonZeroUsize>()
        .map(std::num::NonZeroUsize::get)
        .map_err(|_| anyhow::anyhow!("{name}={value:?} is not valid: a whole number of at least 1"))
}

/// An allowlist of LLM endpoint origins; a bad entry stops start-up, naming `name`.
fn endpoint_list(name: &str, value: &str) -> anyhow::Result<LlmEndpointPolicy> {
    LlmEndpointPolicy::parse_list(value).map_err(|e| anyhow::anyhow!("{name}: {}", e.reason))
}

/// Reads `id:base64,id:base64` from the variable `name`.
fn key_list(name: &str) -> anyhow::Result<Vec<(String, String)>> {
    var(name).map_or_else(|| Ok(Vec::new()), |v| parse_key_list(name, &v))
}

fn parse_key_list(name: &str, value: &str) -> anyhow::Result<Vec<(String, String)>> {
    value
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            pair.split_once(':')
                .map(|(id, key)| (id.trim().to_owned(), key.trim().to_owned()))
                .with_context(|| {
                    format!("{name}: expected `key_id:base64key` entries separated by commas")
                })
        })
        .collect()
}

impl Config {
    /// Reads the environment.
    ///
    /// # Errors
    /// When a variable is set to something unparseable.
    pub fn from_env() -> anyhow::Result<Self> {
        let d = Self::default();
        let encryption_key = var("TRELLIS_ENCRYPTION_KEY").map(|k| {
            (
                var("TRELLIS_ENCRYPTION_KEY_ID").unwrap_or_else(|| "k1".to_owned()),
                k,
            )
        });
        let body_limit_bytes = parsed("TRELLIS_BODY_LIMIT_BYTES", d.body_limit_bytes)?;
        if body_limit_bytes < 1024 {
            bail!("TRELLIS_BODY_LIMIT_BYTES must be at least 1024");
        }
        let db_pipelined_connections = var("TRELLIS_DB_PIPELINED_CONNECTIONS")
            .map(|v| positive("TRELLIS_DB_PIPELINED_CONNECTIONS", &v))
            .transpose()?;
        let max_conversation_messages = parsed(
            "TRELLIS_MAX_CONVERSATION_MESSAGES",
            d.max_conversation_messages,
        )?;
        if max_conversation_messages < 2 {
            bail!(
                "TRELLIS_MAX_CONVERSATION_MESSAGES must be at least 2 (a question and its answer)"
            );
        }
        Ok(Self {
            bind: parsed("TRELLIS_BIND", d.bind)?,
            reuse_port: parsed("TRELLIS_REUSE_PORT", d.reuse_port)?,
            runtime: RuntimeSetting::parse(var("TRELLIS_RUNTIME").as_deref(), serving_threads()?)?,
            database_url: var("DATABASE_URL"),
            migration_database_url: var("TRELLIS_MIGRATION_DATABASE_URL"),
            db_max_connections: parsed("TRELLIS_DB_MAX_CONNECTIONS", d.db_max_connections)?,
            db_pipelined_reads: parsed("TRELLIS_DB_PIPELINED_READS", d.db_pipelined_reads)?,
            db_pipelined_connections,
            user_cache_max: parsed("TRELLIS_USER_CACHE_MAX", d.user_cache_max)?,
            collection_cache_max: parsed("TRELLIS_COLLECTION_CACHE_MAX", d.collection_cache_max)?,
            tenant_cache_max: parsed("TRELLIS_TENANT_CACHE_MAX", d.tenant_cache_max)?,
            attachment_cache_mb: parsed("TRELLIS_ATTACHMENT_CACHE_MB", d.attachment_cache_mb)?,
            max_conversation_messages,
            jwt_secret: var("TRELLIS_JWT_SECRET").map(String::into_bytes),
            encryption_key,
            retired_encryption_keys: key_list("TRELLIS_ENCRYPTION_RETIRED_KEYS")?,
            access_token_ttl_secs: parsed(
                "TRELLIS_ACCESS_TOKEN_TTL_SECS",
                d.access_token_ttl_secs,
            )?,
            refresh_token_ttl_days: parsed(
                "TRELLIS_REFRESH_TOKEN_TTL_DAYS",
                d.refresh_token_ttl_days,
            )?,
            body_limit_bytes,
            cors_allowed_origins: var("TRELLIS_CORS_ORIGINS")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            password_cost: PasswordCost::Standard,
            rag: RagSettings::from_env()?,
            llm_base_url: var("TRELLIS_LLM_BASE_URL"),
            llm_allowed_endpoints: endpoint_list(
                "TRELLIS_LLM_ALLOWED_ENDPOINTS",
                &var("TRELLIS_LLM_ALLOWED_ENDPOINTS").unwrap_or_default(),
            )?,
        })
    }

    /// The URL migrations run with: the owner role if given, else the app's.
    #[must_use]
    pub fn migration_url(&self) -> Option<&str> {
        self.migration_database_url
            .as_deref()
            .or(self.database_url.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_keys_parse_as_id_key_pairs() {
        let parsed = parse_key_list("X", "k1:AAAA, k0:BBBB,").unwrap();
        assert_eq!(
            parsed,
            vec![("k1".into(), "AAAA".into()), ("k0".into(), "BBBB".into())]
        );
        let err = parse_key_list("TRELLIS_ENCRYPTION_RETIRED_KEYS", "nocolon").unwrap_err();
        assert!(err.to_string().contains("TRELLIS_ENCRYPTION_RETIRED_KEYS"));
    }

    #[test]
    fn a_connection_count_must_be_a_whole_number_of_at_least_one() {
        assert_eq!(positive("X", " 4 ").unwrap(), 4);
        for bad in ["0", "-1", "two", "1.5"] {
            let err = positive("TRELLIS_DB_PIPELINED_CONNECTIONS", bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("TRELLIS_DB_PIPELINED_CONNECTIONS"), "{err}");
            assert!(err.contains("at least 1"), "{err}");
        }
    }

    #[test]
    fn the_runtime_is_one_per_core_unless_set_to_shared_and_anything_else_is_refused() {
        assert_eq!(
            RuntimeSetting::parse(None, 2).unwrap(),
            RuntimeSetting::PerCore(2)
        );
        assert_eq!(
            RuntimeSetting::parse(Some(" per-core "), 3).unwrap(),
            RuntimeSetting::PerCore(3)
        );
        assert_eq!(
            RuntimeSetting::parse(Some("shared"), 2).unwrap(),
            RuntimeSetting::Shared
        );
        let err = RuntimeSetting::parse(Some("percore"), 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("TRELLIS_RUNTIME"), "{err}");
        assert!(err.contains("per-core"), "{err}");
    }

    #[test]
    fn a_bad_llm_endpoint_entry_stops_start_up_naming_the_variable_and_the_entry() {
        let err = endpoint_list(
            "TRELLIS_LLM_ALLOWED_ENDPOINTS",
            "https://*.openai.azure.com, llm.local",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("TRELLIS_LLM_ALLOWED_ENDPOINTS"), "{err}");
        assert!(err.contains("llm.local"), "{err}");
        assert!(endpoint_list("X", "").unwrap().is_empty());
    }

    #[test]
    fn the_migration_url_falls_back_to_the_database_url() {
        let c = Config {
            database_url: Some("postgres://app".into()),
            ..Config::default()
        };
        assert_eq!(c.migration_url(), Some("postgres://app"));
        let c = Config {
            migration_database_url: Some("postgres://owner".into()),
            ..c
        };
        assert_eq!(c.migration_url(), Some("postgres://owner"));
    }
}
