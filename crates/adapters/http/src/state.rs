//! The state every handler draws from: the domain services, HTTP settings, the
//! metrics registry and the readiness probe. The app builds it; nothing here picks
//! an adapter.

use crate::metrics::Metrics;
use async_trait::async_trait;
use axum::extract::FromRef;
use std::sync::Arc;
use trellis_content::{ContentService, FileService, QuotaAdministration};
use trellis_identity::IdentityService;
use trellis_rag::service::RagService;
use trellis_tenancy::TenancyService;

/// Default largest request body: 1 MiB.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// Settings of the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Larger request bodies are refused with 413.
    pub body_limit_bytes: usize,
    /// Origins allowed to call the API from a browser (`https://app.example.com`).
    /// Empty means no CORS headers at all, so browsers refuse cross-origin calls.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// Whether the app can serve traffic now (database reachable, migrations applied).
/// The app provides it; `/readyz` asks it.
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    async fn is_ready(&self) -> bool;
}

/// For deployments with nothing to wait for (the in-memory store).
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysReady;

#[async_trait]
impl Readiness for AlwaysReady {
    async fn is_ready(&self) -> bool {
        true
    }
}

/// Everything handlers may need, cheap to clone: axum clones the state into every
/// request's handler, so the parts sit behind one `Arc` (one reference count to bump
/// and drop per request, not one per service). Fields read through `Deref`.
#[derive(Clone)]
pub struct AppState {
    parts: Arc<AppParts>,
}

/// The services and settings an [`AppState`] shares.
#[derive(Clone)]
pub struct AppParts {
    pub tenancy: Arc<TenancyService>,
    pub identity: Arc<IdentityService>,
    pub config: Arc<HttpConfig>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<dyn Readiness>,
    /// Retrieval; `None` answers its routes with 503 (e.g. in adapter tests).
    pub rag: Option<Arc<RagService>>,
    /// Agents and chat; `None` answers their routes with 503.
    pub content: Option<Arc<ContentService>>,
    /// Setting tenants' token budgets; `None` answers its routes with 503.
    pub quota_admin: Option<Arc<QuotaAdministration>>,
    /// Files attached to conversations; `None` answers their routes with 503.
    pub files: Option<Arc<FileService>>,
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.parts
    }
}

impl AppState {
    /// Default settings, an empty metrics registry and an always-ready probe.
    #[must_use]
    pub fn new(tenancy: Arc<TenancyService>, identity: Arc<IdentityService>) -> Self {
        Self {
            parts: Arc::new(AppParts {
                tenancy,
                identity,
                config: Arc::new(HttpConfig::default()),
                metrics: Arc::new(Metrics::default()),
                readiness: Arc::new(AlwaysReady),
                rag: None,
                content: None,
                quota_admin: None,
                files: None,
            }),
        }
    }

    /// The parts to change while building (copied first if the state is shared).
    fn parts_mut(&mut self) -> &mut AppParts {
        Arc::make_mut(&mut self.parts)
    }

    #[must_use]
    pub fn with_config(mut self, config: HttpConfig) -> Self {
        self.parts_mut().config = Arc::new(config);
        self
    }

    #[must_use]
    pub fn with_rag(mut self, rag: Arc<RagService>) -> Self {
        self.parts_mut().rag = Some(rag);
        self
    }

    #[must_use]
    pub fn with_content(mut self, content: Arc<ContentService>) -> Self {
        self.parts_mut().content = Some(content);
        self
    }

    #[must_use]
    pub fn with_quota_admin(mut self, admin: Arc<QuotaAdministration>) -> Self {
        self.parts_mut().quota_admin = Some(admin);
        self
    }

    #[must_use]
    pub fn with_files(mut self, files: Arc<FileService>) -> Self {
        self.parts_mut().files = Some(files);
        self
    }

    #[must_use]
    pub fn with_readiness(mut self, readiness: Arc<dyn Readiness>) -> Self {
        self.parts_mut().readiness = readiness;
        self
    }
}

impl FromRef<AppState> for Arc<TenancyService> {
    fn from_ref(s: &AppState) -> Self {
        s.tenancy.clone()
    }
}

impl FromRef<AppState> for Arc<IdentityService> {
    fn from_ref(s: &AppState) -> Self {
        s.identity.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(s: &AppState) -> Self {
        s.metrics.clone()
    }
}

impl FromRef<AppState> for Arc<dyn Readiness> {
    fn from_ref(s: &AppState) -> Self {
        s.readiness.clone()
    }
}
