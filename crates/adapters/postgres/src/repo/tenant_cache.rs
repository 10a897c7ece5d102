//! `TenantRepo` on Postgres with each tenant's LLM configuration kept in process. An
//! answer reads it when it opens the model (and, for a model of the tenant's own rather
//! than one of the catalogue's, once before); from memory, neither read waits for the
//! database.
//!
//! A trigger (migration 000011) sends `tenant_id/tenant_id` on
//! `trellis_tenant_llm_changed` whenever a tenant's LLM configuration is inserted,
//! updated or deleted; [`super::notice_cache`] explains how that, local forgetting, the
//! epoch guard and a maximum age keep an entry from being stale for long. What is kept
//! is what Postgres holds: the API key stays sealed until the tenancy service opens it.

use super::notice_cache::{self, ListenerGuard, NoticeCache};
use crate::store::PgStore;
use async_trait::async_trait;
use std::sync::Arc;
use trellis_kernel::{Page, PageRequest, PlatformCtx, Slug, TenantCtx, TenantId};
use trellis_tenancy::{
    FirstAdmin, LlmConfig, NewTenant, Result, Tenant, TenantPatch, TenantRef, TenantRepo,
    TenantStatus, WidgetConfig,
};

/// The channel migration 000011's trigger notifies.
const CHANNEL: &str = "trellis_tenant_llm_changed";

/// Tenants whose LLM configuration is kept by default (under a kilobyte each).
pub const DEFAULT_MAX_CACHED_TENANTS: usize = 10_000;

/// [`PgStore`]'s tenants with `llm` served from memory while change notices arrive.
#[derive(Clone)]
pub struct PgCachedTenants {
    store: PgStore,
    llm: Arc<NoticeCache<(), Option<LlmConfig>>>,
    _listener: Arc<ListenerGuard>,
}

impl PgCachedTenants {
    /// Starts the listener (on its own connection, outside the pool) on the current
    /// Tokio runtime. Until it listens, every read goes to Postgres.
    #[must_use]
    pub fn new(store: PgStore, max_entries: usize) -> Self {
        let (llm, listener) = notice_cache::start(&store, CHANNEL, max_entries, |payload| {
            notice_cache::parse_key(payload, |_| ())
        });
        Self {
            store,
            llm,
            _listener: listener,
        }
    }

    /// Whether reads may currently be answered from memory.
    #[must_use]
    pub fn is_listening(&self) -> bool {
        self.llm.is_listening()
    }

    /// Runs a change, then drops the tenant's entry (the notice will too, later).
    async fn changing<T>(
        &self,
        id: TenantId,
        change: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let out = change.await;
        self.llm.forget(&(id, ()));
        out
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
        self.store.set_status(ctx, id, status).await
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
        TenantRepo::update(&self.store, ctx, patch).await
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
