//! Choosing adapters and wiring them into services: the only place in Trellis that
//! knows which technology stands behind each port.

use crate::attachments::{
    AttachmentTexts, ExtractedAttachments, ExtractorSniffer, RagIntake, SharedBlobs,
};
use crate::chat::{TenantCatalog, TenantChatModel};
use crate::config::{BlobSetting, Config, PasswordCost, RagSettings};
use crate::retriever::RagRetriever;
use anyhow::{Context, bail};
use async_trait::async_trait;
use std::sync::Arc;
use trellis_blob::{BlobConfig, ObjectBlobStore, S3Config};
use trellis_content::{
    ContentConfig, ContentPorts, ContentService, DEFAULT_MAX_FILE_BYTES, FilePorts, FileService,
    QuotaAdministration,
};
use trellis_crypto::{AesGcmCipher, Argon2Hasher, JwtSigner};
use trellis_embed::{EmbedConfig, OpenAiConfig, StaticRegistry};
use trellis_extract::{Extractor, Limits as ExtractLimits};
use trellis_http::{AppState, HttpConfig, MetricsSource, Readiness};
use trellis_identity::service::IdentityPorts;
use trellis_identity::{IdentityConfig, IdentityService};
use trellis_kernel::{PasswordHasher, SystemClock, secrets::random_token};
use trellis_memory::{
    InMemoryLoginThrottle, MemoryContent, MemoryRag, MemoryStore, ThrottleLimits, TokioBlocking,
    TokioSpawner,
};
use trellis_postgres::{
    PgCachedCollections, PgCachedTenants, PgCachedUsers, PgStore, PgVectorCache,
};
use trellis_rag::service::{RagConfig, RagPorts, RagService};
use trellis_rag::{BlobStore, EmbedderRegistry};
use trellis_tenancy::{SecretCipher, TenancyService};

/// Which storage the app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Nothing persists: the embedded default when no database is configured.
    Memory,
    Postgres,
}

/// A wired application, ready to serve.
#[derive(Clone)]
pub struct App {
    pub storage: Storage,
    pub tenancy: Arc<TenancyService>,
    pub identity: Arc<IdentityService>,
    pub rag: Arc<RagService>,
    /// Agents, conversations, memories and streamed answers.
    pub content: Arc<ContentService>,
    pub state: AppState,
}

impl App {
    /// The complete HTTP API.
    pub fn router(&self) -> axum::Router {
        trellis_http::router(self.state.clone())
    }
}

struct PgReadiness(PgStore);

#[async_trait]
impl Readiness for PgReadiness {
    async fn is_ready(&self) -> bool {
        self.0.connection().ping().await.is_ok()
    }
}

/// The pipelined reads' counters, as `/metrics` series.
struct PipelinedMetrics(PgStore);

impl MetricsSource for PipelinedMetrics {
    fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let Some(counts) = self.0.pipelined_counts() else {
            return;
        };
        let after_ms = trellis_postgres::HEDGE_AFTER.as_millis();
        // `write!` to a String cannot fail.
        let _ = write!(
            out,
            "# HELP trellis_db_reads_resent_total Pipelined reads with no answer after {after_ms} ms, sent again on another connection.\n\
             # TYPE trellis_db_reads_resent_total counter\n\
             trellis_db_reads_resent_total {}\n\
             # HELP trellis_db_reads_resent_answered_first_total Re-sent reads whose second copy answered first: the first backend was held up.\n\
             # TYPE trellis_db_reads_resent_answered_first_total counter\n\
             trellis_db_reads_resent_answered_first_total {}\n",
            counts.resent, counts.resent_answered_first
        );
    }
}

/// Builds the app from configuration.
///
/// # Errors
/// With Postgres configured: when the JWT secret or encryption key is missing or
/// malformed, or the database cannot be reached.
pub async fn bootstrap(config: &Config) -> anyhow::Result<App> {
    let hasher: Arc<dyn PasswordHasher> = Arc::new(match config.password_cost {
        PasswordCost::Standard => Argon2Hasher::new()?,
        PasswordCost::InsecureFastForTests => Argon2Hasher::fast_insecure_for_tests()?,
    });
    let (signer, cipher) = secrets(config)?;
    let identity_config = IdentityConfig {
        access_ttl: chrono::Duration::seconds(config.access_token_ttl_secs.max(1)),
        refresh_ttl: chrono::Duration::days(config.refresh_token_ttl_days.max(1)),
    };
    let throttle = Arc::new(InMemoryLoginThrottle::new(ThrottleLimits::default()));
    let clock = Arc::new(SystemClock);

    let embedders: Arc<dyn EmbedderRegistry> = Arc::new(embedders(&config.rag)?);
    let (storage, ports, tenants, pg, rag_ports, content_ports): Stores = match &config.database_url
    {
        None => memory_stores(config)?,
        Some(url) => postgres_stores(config, url).await?,
    };
    let shared_blobs = rag_ports.blobs.clone();
    let extractor: Arc<dyn trellis_rag::TextExtractor> =
        Arc::new(Extractor::new(ExtractLimits::default()));
    let rag = Arc::new(rag_service(
        rag_ports,
        embedders,
        extractor.clone(),
        clock.clone(),
        RagConfig {
            max_upload_bytes: config.rag.max_upload_bytes,
            ..RagConfig::default()
        },
    ));

    let tenancy = Arc::new(
        TenancyService::new(tenants.clone(), hasher.clone(), cipher, clock.clone())
            .with_llm_endpoints(config.llm_allowed_endpoints.clone()),
    );
    let identity = Arc::new(IdentityService::new(
        IdentityPorts {
            users: ports.users,
            memberships: ports.memberships,
            keys: ports.keys,
            refresh: ports.refresh,
            admins: ports.admins,
            tenants,
            hasher,
            signer,
            throttle,
            clock: clock.clone(),
        },
        identity_config,
    ));
    let quota_admin = Arc::new(QuotaAdministration::new(content_ports.quota_admin));
    let content = Arc::new(ContentService::new(
        ContentPorts {
            agents: content_ports.agents,
            tools: content_ports.tools,
            conversations: content_ports.conversations,
            messages: content_ports.messages,
            memories: content_ports.memories,
            files: content_ports.files,
            attachments: Arc::new(ExtractedAttachments {
                blobs: shared_blobs.clone(),
                extractor: extractor.clone(),
                cache: AttachmentTexts::new(config.attachment_cache_mb.saturating_mul(1 << 20)),
            }),
            usage: content_ports.usage,
            quotas: content_ports.quotas,
            catalog: Arc::new(TenantCatalog::new(content_ports.catalog, tenancy.clone())),
            chat: Arc::new(TenantChatModel::new(
                tenancy.clone(),
                config.llm_base_url.clone(),
            )),
            retriever: Arc::new(RagRetriever::new(rag.clone())),
            spawner: Arc::new(TokioSpawner),
            clock,
        },
        ContentConfig {
            max_conversation_messages: config.max_conversation_messages,
            ..ContentConfig::default()
        },
    ));
    let files = Arc::new(FileService::new(
        (*content).clone(),
        FilePorts {
            blobs: Arc::new(SharedBlobs(shared_blobs)),
            sniffer: Arc::new(ExtractorSniffer(extractor)),
            knowledge: Arc::new(RagIntake(rag.clone())),
            blocking: Arc::new(TokioBlocking),
        },
        DEFAULT_MAX_FILE_BYTES.min(config.rag.max_upload_bytes),
    ));
    let mut state = AppState::new(tenancy.clone(), identity.clone())
        .with_config(HttpConfig {
            body_limit_bytes: config.body_limit_bytes,
            cors_allowed_origins: config.cors_allowed_origins.clone(),
        })
        .with_rag(rag.clone())
        .with_content(content.clone())
        .with_quota_admin(quota_admin)
        .with_files(files);
    if let Some(pg) = pg {
        state
            .metrics
            .add_source(Arc::new(PipelinedMetrics(pg.clone())));
        state = state.with_readiness(Arc::new(PgReadiness(pg)));
    }
    Ok(App {
        storage,
        tenancy,
        identity,
        rag,
        content,
        state,
    })
}

/// What the storage choice yields: the adapters behind every repository port.
/// The in-memory adapters: the embedded default, nothing persists.
fn memory_stores(config: &Config) -> anyhow::Result<Stores> {
    let store = MemoryStore::new();
    let rag = MemoryRag::new();
    let blobs: Arc<dyn BlobStore> = match &config.rag.blobs {
        None | Some(BlobSetting::Memory) => Arc::new(rag.clone()),
        Some(other) => blob_store(other)?,
    };
    let rag_ports = rag_store_ports(&rag, blobs);
    Ok((
        Storage::Memory,
        identity_ports(&store),
        Arc::new(store),
        None,
        rag_ports,
        content_store_ports(&MemoryContent::new()),
    ))
}

/// The Postgres adapters, with the caches and the replica the configuration asks for.
async fn postgres_stores(config: &Config, url: &str) -> anyhow::Result<Stores> {
    let mut store = PgStore::connect(url, config.db_max_connections)
        .await
        .context("failed to connect to PostgreSQL (DATABASE_URL)")?;
    if !config.db_pipelined_reads {
        store = store.without_pipelined_reads();
    }
    if let Some(max) = config.db_pipelined_connections {
        store = store.with_pipelined_connections(max);
    }
    if let crate::config::RuntimeSetting::PerCore(runtimes) = config.runtime {
        store = store.with_runtimes(runtimes);
    }
    if let Some(connections) = store.pipelined_connections() {
        tracing::info!(
            connections,
            runtimes = store.pipelined_runtimes().unwrap_or(1),
            "hot reads are pipelined, sharing at most this many connections"
        );
    }
    let default_dir = BlobSetting::Dir(std::path::PathBuf::from(".trellis/blobs"));
    let blobs = blob_store(config.rag.blobs.as_ref().unwrap_or(&default_dir))?;
    let mut rag_ports = rag_store_ports(&store, blobs);
    if config.collection_cache_max > 0 {
        // One cache for both ports, so the worker's model-change steps
        // forget what `get` kept.
        let collections = Arc::new(PgCachedCollections::new(
            store.clone(),
            config.collection_cache_max,
        ));
        rag_ports.collections = collections.clone();
        rag_ports.model_changes = collections;
    }
    if config.rag.vector_cache_max_vectors > 0 {
        // One replica answers both: vector search, and which chunks a
        // full-text query can match.
        let replica = Arc::new(PgVectorCache::new(
            store.clone(),
            config.rag.vector_cache_max_vectors,
        ));
        rag_ports.vectors = replica.clone();
        rag_ports.text = replica;
    }
    let mut content_ports = content_store_ports(&store);
    let mut identity = identity_ports(&store);
    if config.user_cache_max > 0 {
        let users = PgCachedUsers::new(store.clone(), config.user_cache_max);
        identity.users = Arc::new(users);
    }
    let tenants: Arc<dyn trellis_tenancy::TenantRepo> = if config.tenant_cache_max > 0 {
        // One cache for all these ports, so a change to the tenant made
        // through it also forgets the tenant's view of the catalogue.
        let cached = Arc::new(PgCachedTenants::new(store.clone(), config.tenant_cache_max));
        content_ports.catalog = cached.clone();
        content_ports.quotas = cached.clone();
        content_ports.quota_admin = cached.clone();
        cached
    } else {
        Arc::new(store.clone())
    };
    Ok((
        Storage::Postgres,
        identity,
        tenants,
        Some(store),
        rag_ports,
        content_ports,
    ))
}

type Stores = (
    Storage,
    StorePorts,
    Arc<dyn trellis_tenancy::TenantRepo>,
    // The Postgres store itself, for the readiness probe and `/metrics`.
    Option<PgStore>,
    RagStorePorts,
    ContentStorePorts,
);

struct ContentStorePorts {
    agents: Arc<dyn trellis_content::AgentRepo>,
    tools: Arc<dyn trellis_content::ToolRepo>,
    conversations: Arc<dyn trellis_content::ConversationRepo>,
    messages: Arc<dyn trellis_content::MessageRepo>,
    memories: Arc<dyn trellis_content::MemoryRepo>,
    files: Arc<dyn trellis_content::FileRepo>,
    usage: Arc<dyn trellis_content::UsageMeter>,
    quotas: Arc<dyn trellis_content::QuotaSource>,
    quota_admin: Arc<dyn trellis_content::QuotaAdmin>,
    catalog: Arc<dyn trellis_content::LlmCatalog>,
}

fn content_store_ports<S>(store: &S) -> ContentStorePorts
where
    S: trellis_content::AgentRepo
        + trellis_content::ToolRepo
        + trellis_content::ConversationRepo
        + trellis_content::MessageRepo
        + trellis_content::MemoryRepo
        + trellis_content::FileRepo
        + trellis_content::UsageMeter
        + trellis_content::QuotaSource
        + trellis_content::QuotaAdmin
        + trellis_content::LlmCatalog
        + Clone,
{
    ContentStorePorts {
        agents: Arc::new(store.clone()),
        tools: Arc::new(store.clone()),
        conversations: Arc::new(store.clone()),
        messages: Arc::new(store.clone()),
        memories: Arc::new(store.clone()),
        files: Arc::new(store.clone()),
        usage: Arc::new(store.clone()),
        quotas: Arc::new(store.clone()),
        quota_admin: Arc::new(store.clone()),
        catalog: Arc::new(store.clone()),
    }
}

/// The RAG service over `store`'s ports, with its long steps on Tokio's blocking
/// threads.
pub(crate) fn rag_service(
    store: RagStorePorts,
    embedders: Arc<dyn EmbedderRegistry>,
    extractor: Arc<dyn trellis_rag::TextExtractor>,
    clock: Arc<dyn trellis_kernel::Clock>,
    config: RagConfig,
) -> RagService {
    RagService::new(
        RagPorts {
            collections: store.collections,
            documents: store.documents,
            chunks: store.chunks,
            vectors: store.vectors,
            text: store.text,
            embedders,
            blobs: store.blobs,
            extractor,
            blocking: Arc::new(TokioBlocking),
            jobs: store.jobs,
            model_changes: store.model_changes,
            clock,
        },
        config,
    )
}

pub(crate) struct RagStorePorts {
    collections: Arc<dyn trellis_rag::CollectionRepo>,
    documents: Arc<dyn trellis_rag::DocumentRepo>,
    chunks: Arc<dyn trellis_rag::ChunkRepo>,
    vectors: Arc<dyn trellis_rag::VectorIndex>,
    text: Arc<dyn trellis_rag::TextIndex>,
    jobs: Arc<dyn trellis_rag::JobQueue>,
    model_changes: Arc<dyn trellis_rag::ModelChangeRepo>,
    blobs: Arc<dyn BlobStore>,
}

pub(crate) fn rag_store_ports<S>(store: &S, blobs: Arc<dyn BlobStore>) -> RagStorePorts
where
    S: trellis_rag::CollectionRepo
        + trellis_rag::DocumentRepo
        + trellis_rag::ChunkRepo
        + trellis_rag::VectorIndex
        + trellis_rag::TextIndex
        + trellis_rag::JobQueue
        + trellis_rag::ModelChangeRepo
        + Clone,
{
    RagStorePorts {
        collections: Arc::new(store.clone()),
        documents: Arc::new(store.clone()),
        chunks: Arc::new(store.clone()),
        vectors: Arc::new(store.clone()),
        text: Arc::new(store.clone()),
        jobs: Arc::new(store.clone()),
        model_changes: Arc::new(store.clone()),
        blobs,
    }
}

fn blob_store(setting: &BlobSetting) -> anyhow::Result<Arc<dyn BlobStore>> {
    let config = match setting {
        BlobSetting::Memory => BlobConfig::Memory,
        BlobSetting::Dir(root) => BlobConfig::Local { root: root.clone() },
        BlobSetting::S3 {
            bucket,
            region,
            endpoint,
            access_key_id,
            secret_access_key,
            allow_http,
        } => {
            let mut s3 = S3Config::new(bucket.clone());
            s3.region.clone_from(region);
            s3.endpoint.clone_from(endpoint);
            s3.access_key_id.clone_from(access_key_id);
            s3.secret_access_key.clone_from(secret_access_key);
            s3.allow_http = *allow_http;
            BlobConfig::S3(s3)
        }
    };
    Ok(Arc::new(ObjectBlobStore::from_config(&config).context(
        "file storage (TRELLIS_BLOB_DIR / TRELLIS_S3_*)",
    )?))
}

fn embedders(settings: &RagSettings) -> anyhow::Result<StaticRegistry> {
    let openai = match (&settings.openai_url, &settings.openai_model) {
        (Some(url), Some(model)) => {
            let dimension = settings.openai_dimension.context(
                "TRELLIS_OPENAI_EMBED_DIMENSION is required with TRELLIS_OPENAI_EMBED_URL",
            )?;
            let mut c = OpenAiConfig::new(url.clone(), model.clone(), dimension);
            c.api_key.clone_from(&settings.openai_api_key);
            Some(c)
        }
        (None, None) => None,
        _ => anyhow::bail!(
            "set both TRELLIS_OPENAI_EMBED_URL and TRELLIS_OPENAI_EMBED_MODEL (or neither)"
        ),
    };
    let config = EmbedConfig {
        model_dir: settings.embed_model_dir.clone(),
        default_model: settings.embed_default.clone(),
        openai,
        ..EmbedConfig::default()
    };
    StaticRegistry::from_config(&config)
        .context("embedding models (TRELLIS_EMBED_* / TRELLIS_OPENAI_EMBED_*)")
}

struct StorePorts {
    users: Arc<dyn trellis_identity::UserRepo>,
    memberships: Arc<dyn trellis_identity::MembershipRepo>,
    keys: Arc<dyn trellis_identity::ApiKeyRepo>,
    refresh: Arc<dyn trellis_identity::RefreshTokenRepo>,
    admins: Arc<dyn trellis_identity::PlatformAdminRepo>,
}

fn identity_ports<S>(store: &S) -> StorePorts
where
    S: trellis_identity::UserRepo
        + trellis_identity::MembershipRepo
        + trellis_identity::ApiKeyRepo
        + trellis_identity::RefreshTokenRepo
        + trellis_identity::PlatformAdminRepo
        + Clone,
{
    StorePorts {
        users: Arc::new(store.clone()),
        memberships: Arc::new(store.clone()),
        keys: Arc::new(store.clone()),
        refresh: Arc::new(store.clone()),
        admins: Arc::new(store.clone()),
    }
}

type Secrets = (
    Arc<dyn trellis_identity::TokenSigner>,
    Arc<dyn SecretCipher>,
);

/// With a database, both secrets are required: tokens must survive restarts and the
/// stored API keys must stay readable. In memory, missing ones are made up per run.
fn secrets(config: &Config) -> anyhow::Result<Secrets> {
    let persistent = config.database_url.is_some();
    let signer = match &config.jwt_secret {
        Some(s) => JwtSigner::new(s).context("TRELLIS_JWT_SECRET")?,
        None if persistent => bail!(
            "TRELLIS_JWT_SECRET is not set. With a database configured, Trellis needs a JWT signing secret \
             of at least 32 bytes, e.g. `export TRELLIS_JWT_SECRET=$(openssl rand -base64 48)`."
        ),
        None => JwtSigner::new(random_token(48).as_bytes())?,
    };
    let cipher = match &config.encryption_key {
        Some((id, key)) => AesGcmCipher::new((id, key), &config.retired_encryption_keys)
            .context("TRELLIS_ENCRYPTION_KEY / TRELLIS_ENCRYPTION_RETIRED_KEYS")?,
        None if persistent => bail!(
            "TRELLIS_ENCRYPTION_KEY is not set. With a database configured, Trellis needs a 32-byte AES key \
             (base64) to seal tenant secrets, e.g. `export TRELLIS_ENCRYPTION_KEY=$(openssl rand -base64 32)`."
        ),
        None => AesGcmCipher::ephemeral(),
    };
    Ok((Arc::new(signer), Arc::new(cipher)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_database() -> Config {
        Config {
            database_url: Some("postgres://app@localhost/trellis".into()),
            jwt_secret: Some(vec![1; 48]),
            encryption_key: Some((
                "k1".into(),
                "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into(),
            )),
            ..Config::default()
        }
    }

    fn refusal(config: &Config) -> String {
        match secrets(config) {
            Ok(_) => panic!("expected a refusal"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn with_a_database_the_app_refuses_to_start_without_a_jwt_secret() {
        let config = Config {
            jwt_secret: None,
            ..with_database()
        };
        assert!(refusal(&config).contains("TRELLIS_JWT_SECRET"));
    }

    #[test]
    fn with_a_database_the_app_refuses_to_start_without_an_encryption_key() {
        let config = Config {
            encryption_key: None,
            ..with_database()
        };
        assert!(refusal(&config).contains("TRELLIS_ENCRYPTION_KEY"));
    }

    #[test]
    fn a_malformed_encryption_key_is_refused_with_its_name() {
        let config = Config {
            encryption_key: Some(("k1".into(), "not base64!".into())),
            ..with_database()
        };
        assert!(refusal(&config).contains("TRELLIS_ENCRYPTION_KEY"));
    }

    #[test]
    fn with_both_secrets_the_app_accepts_the_configuration() {
        assert!(secrets(&with_database()).is_ok());
    }

    #[test]
    fn without_a_database_missing_secrets_are_made_up_for_the_run() {
        assert!(secrets(&Config::default()).is_ok());
    }

    #[tokio::test]
    async fn without_a_database_the_app_runs_in_memory() {
        let config = Config {
            password_cost: PasswordCost::InsecureFastForTests,
            ..Config::default()
        };
        let app = bootstrap(&config).await.unwrap();
        assert_eq!(app.storage, Storage::Memory);
    }
}
