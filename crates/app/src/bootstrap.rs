//! Choosing adapters and wiring them into services: the only place in Trellis that
//! knows which technology stands behind each port.

use crate::config::{Config, PasswordCost};
use anyhow::{Context, bail};
use async_trait::async_trait;
use std::sync::Arc;
use trellis_crypto::{AesGcmCipher, Argon2Hasher, JwtSigner};
use trellis_http::{AppState, HttpConfig, Readiness};
use trellis_identity::service::IdentityPorts;
use trellis_identity::{IdentityConfig, IdentityService};
use trellis_kernel::{PasswordHasher, SystemClock, secrets::random_token};
use trellis_memory::{InMemoryLoginThrottle, MemoryStore, ThrottleLimits};
use trellis_postgres::PgStore;
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

    let (storage, ports, tenants, readiness): (
        _,
        _,
        Arc<dyn trellis_tenancy::TenantRepo>,
        Option<Arc<dyn Readiness>>,
    ) = match &config.database_url {
        None => {
            let store = MemoryStore::new();
            (
                Storage::Memory,
                identity_ports(&store),
                Arc::new(store),
                None,
            )
        }
        Some(url) => {
            let store = PgStore::connect(url, config.db_max_connections)
                .await
                .context("failed to connect to PostgreSQL (DATABASE_URL)")?;
            let readiness: Arc<dyn Readiness> = Arc::new(PgReadiness(store.clone()));
            (
                Storage::Postgres,
                identity_ports(&store),
                Arc::new(store),
                Some(readiness),
            )
        }
    };

    let tenancy = Arc::new(TenancyService::new(
        tenants.clone(),
        hasher.clone(),
        cipher,
        clock.clone(),
    ));
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
            clock,
        },
        identity_config,
    ));
    let mut state = AppState::new(tenancy.clone(), identity.clone()).with_config(HttpConfig {
        body_limit_bytes: config.body_limit_bytes,
        cors_allowed_origins: config.cors_allowed_origins.clone(),
    });
    if let Some(r) = readiness {
        state = state.with_readiness(r);
    }
    Ok(App {
        storage,
        tenancy,
        identity,
        state,
    })
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
