//! `TenantRepo`, `LlmCatalog` and `QuotaSource` on Postgres with each tenant's LLM
//! configuration, its view of the model catalogue and its token budgets kept in
//! process. An answer checks the budgets, looks its model up in the catalogue and reads
//! the LLM configuration when it opens the model (and, for a model of the tenant's own
//! rather than one of the catalogue's, once before); from memory, none of these reads
//! waits for the database. What was used against a budget is still summed on every
//! check.
//!
//! Triggers send `tenant_id/tenant_id` on `trellis_tenant_llm_changed` whenever a
//! tenant's LLM configuration is inserted, updated or deleted (migration 000011); on
//! `trellis_catalog_changed` whenever a tenant row changes, or `*` whenever the
//! catalogue does (migration 000012); and on `trellis_quota_changed` whenever a
//! tenant's budgets do (migration 000013). [`super::notice_cache`] explains how that,
//! local forgetting, the epoch guard and a maximum age keep an entry from being stale
//! for long. What is kept is what Postgres holds: the API key stays sealed until the
//! tenancy service opens it.

use super::content_catalog::unavailable;
use super::notice_cache::Watched;
use crate::store::PgStore;
use async_trait::async_trait;
use trellis_content::{
    LlmCatalog, LlmModel, Quota, QuotaAdmin, QuotaSource, Result as ContentResult,
};
use trellis_kernel::{Page, PageRequest, PlatformCtx, Slug, TenantCtx, TenantId};
use trellis_tenancy::{
    FirstAdmin, LlmConfig, LlmProvider, NewTenant, Result, Tenant, TenantPatch, TenantRef,
    TenantRepo, TenantStatus, WidgetConfig,
};

/// The channel migration 000011's trigger notifies.
const CHANNEL: &str = "trellis_tenant_llm_changed";
/// The channel migration 000012's triggers notify.
const CATALOG_CHANNEL: &str = "trellis_catalog_changed";
/// The channel migration 000013's trigger notifies.
const QUOTA_CHANNEL: &str = "trellis_quota_changed";

/// Tenants whose LLM configuration is kept by default (under a kilobyte each).
pub const DEFAULT_MAX_CACHED_TENANTS: usize = 10_000;

/// [`PgStore`]'s tenants with `llm`, the catalogue and the budgets served from memory
/// while change notices arrive.
#[derive(Clone)]
pub struct PgCachedTenants {
    store: PgStore,
    llm: Watched<(), Option<LlmConfig>>,
    catalog: Watched<(), Vec<LlmModel>>,
    quota: Watched<(), Quota>,
}

impl PgCachedTenants {
    /// Starts the listeners (each on its own connection, outside the pool) on the
    /// current Tokio runtime. Until they listen, every read goes to Postgres.
    #[must_use]
    pub fn new(store: PgStore, max_entries: usize) -> Self {
        // Keyed by tenant alone: the notices name the tenant twice.
        let tenant_only = |_| ();
        Self {
            llm: Watched::start(&store, CHANNEL, max_entries, tenant_only),
            catalog: Watched::start(&store, CATALOG_CHANNEL, max_entries, tenant_only),
            quota: Watched::start(&store, QUOTA_CHANNEL, max_entries, tenant_only),
            store,
        }
    }

    /// Whether reads may currently be answered from memory.
    #[must_use]
    pub fn is_listening(&self) -> bool {
        self.llm.is_listening() && self.catalog.is_listening() && self.quota.is_listening()
    }

    /// Runs a change, then drops the tenant's entries (the notices will too, later).
    async fn changing<T, E>(
        &self,
        id: TenantId,
        change: impl Future<Output = std::result::Result<T, E>>,
    ) -> std::result::Result<T, E> {
        self.catalog
            .changing(id, (), self.llm.changing(id, (), change))
            .await
    }
}

#[async_trait]
impl TenantRepo for PgCachedTenants {
    async fn create(&self, ctx: &PlatformCtx, new: NewTenant, admin: FirstAdmin) -> Result<Tenant> {
        self.store.create(ctx, new, admin).await
    }

    async fn list(&self, ctx: &PlatformCtx, page: PageRequest) -> Result<Page<Tenant>> {
        TenantRepo::list(&self.store, ctx, page).await
    }

    async fn get(&self, ctx: &PlatformCtx, id: TenantId) -> Result<Tenant> {
        TenantRepo::get(&self.store, ctx, id).await
    }

    async fn set_status(
        &self,
        ctx: &PlatformCtx,
        id: TenantId,
        status: TenantStatus,
    ) -> Result<Tenant> {
        self.changing(id, self.store.set_status(ctx, id, status))
            .await
    }

    async fn soft_delete(&self, ctx: &PlatformCtx, id: TenantId) -> Result<()> {
        self.changing(id, self.store.soft_delete(ctx, id)).await
    }

    async fn resolve_slug(&self, ctx: &PlatformCtx, slug: &Slug) -> Result<Option<TenantRef>> {
        self.store.resolve_slug(ctx, slug).await
    }

    async fn current(&self, ctx: &TenantCtx) -> Result<Tenant> {
        self.store.current(ctx).await
    }

    async fn update(&self, ctx: &TenantCtx, patch: TenantPatch) -> Result<Tenant> {
        self.changing(ctx.tenant_id(), TenantRepo::update(&self.store, ctx, patch))
            .await
    }

    async fn widget(&self, ctx: &TenantCtx) -> Result<Option<WidgetConfig>> {
        self.store.widget(ctx).await
    }

    async fn put_widget(&self, ctx: &TenantCtx, widget: WidgetConfig) -> Result<WidgetConfig> {
        self.store.put_widget(ctx, widget).await
    }

    async fn llm(&self, ctx: &TenantCtx) -> Result<Option<LlmConfig>> {
        self.llm
            .get_or_read((ctx.tenant_id(), ()), self.store.llm(ctx))
            .await
    }

    async fn put_llm(&self, ctx: &TenantCtx, llm: LlmConfig) -> Result<LlmConfig> {
        self.changing(ctx.tenant_id(), self.store.put_llm(ctx, llm))
            .await
    }
}

#[async_trait]
impl LlmCatalog for PgCachedTenants {
    async fn list(&self, ctx: &TenantCtx) -> ContentResult<Vec<LlmModel>> {
        self.catalog
            .get_or_read((ctx.tenant_id(), ()), LlmCatalog::list(&self.store, ctx))
            .await
    }

    async fn get(
        &self,
        ctx: &TenantCtx,
        provider: LlmProvider,
        model: &str,
    ) -> ContentResult<LlmModel> {
        // The tenant's view is every catalogue model of an allowed provider, so a model
        // missing from it is exactly one `get` would refuse.
        LlmCatalog::list(self, ctx)
            .await?
            .into_iter()
            .find(|m| m.provider == provider && m.name == model)
            .ok_or_else(|| unavailable(provider, model))
    }
}

#[async_trait]
impl QuotaSource for PgCachedTenants {
    async fn quota(&self, ctx: &TenantCtx) -> ContentResult<Quota> {
        self.quota
            .get_or_read((ctx.tenant_id(), ()), self.store.quota(ctx))
            .await
    }
}

#[async_trait]
impl QuotaAdmin for PgCachedTenants {
    async fn quota_of(&self, ctx: &PlatformCtx, tenant: TenantId) -> ContentResult<Quota> {
        self.store.quota_of(ctx, tenant).await
    }

    async fn replace_quota(
        &self,
        ctx: &PlatformCtx,
        tenant: TenantId,
        quota: Quota,
    ) -> ContentResult<()> {
        self.quota
            .changing(tenant, (), self.store.replace_quota(ctx, tenant, quota))
            .await
    }
}
