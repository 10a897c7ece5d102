//! What the tenancy domain needs from storage and cryptography.

use crate::{
    FirstAdmin, LlmConfig, NewTenant, Result, SealedSecret, Tenant, TenantPatch, TenantRef,
    TenantStatus, WidgetConfig,
};
use async_trait::async_trait;
use trellis_kernel::{Page, PageRequest, PlatformCtx, Slug, TenantCtx, TenantId};

/// Where tenants and their settings live.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait TenantRepo: Send + Sync + 'static {
    /// Creates the tenant and its first admin user in one transaction.
    ///
    /// # Errors
    /// `Conflict` when the slug, subdomain or custom domain is taken.
    async fn create(&self, ctx: &PlatformCtx, new: NewTenant, admin: FirstAdmin) -> Result<Tenant>;

    /// All tenants that are not deleted, oldest first.
    async fn list(&self, ctx: &PlatformCtx, page: PageRequest) -> Result<Page<Tenant>>;

    /// # Errors
    /// `NotFound` for an unknown or deleted tenant.
    async fn get(&self, ctx: &PlatformCtx, id: TenantId) -> Result<Tenant>;

    /// # Errors
    /// `NotFound` for an unknown or deleted tenant.
    async fn set_status(
        &self,
        ctx: &PlatformCtx,
        id: TenantId,
        status: TenantStatus,
    ) -> Result<Tenant>;

    /// Marks the tenant deleted; its slug stays reserved.
    ///
    /// # Errors
    /// `NotFound` for an unknown or already deleted tenant.
    async fn soft_delete(&self, ctx: &PlatformCtx, id: TenantId) -> Result<()>;

    /// Finds a live tenant by slug, for login. `None` when there is none.
    async fn resolve_slug(&self, ctx: &PlatformCtx, slug: &Slug) -> Result<Option<TenantRef>>;

    /// The caller's own tenant.
    async fn current(&self, ctx: &TenantCtx) -> Result<Tenant>;

    /// # Errors
    /// `Conflict` when a new custom domain is taken.
    async fn update(&self, ctx: &TenantCtx, patch: TenantPatch) -> Result<Tenant>;

    /// The widget configuration, or `None` if never written.
    async fn widget(&self, ctx: &TenantCtx) -> Result<Option<WidgetConfig>>;

    async fn put_widget(&self, ctx: &TenantCtx, widget: WidgetConfig) -> Result<WidgetConfig>;

    /// The LLM configuration, or `None` if never written.
    async fn llm(&self, ctx: &TenantCtx) -> Result<Option<LlmConfig>>;

    async fn put_llm(&self, ctx: &TenantCtx, llm: LlmConfig) -> Result<LlmConfig>;
}

/// Authenticated encryption of tenant secrets (AES-256-GCM in the crypto adapter).
/// `aad` binds a ciphertext to its owner, so it cannot be replayed into another tenant.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait SecretCipher: Send + Sync + 'static {
    /// # Errors
    /// Only when the cipher library fails.
    fn seal(&self, plaintext: &str, aad: &[u8]) -> anyhow::Result<SealedSecret>;

    /// # Errors
    /// When the key id is unknown or the ciphertext or `aad` was tampered with.
    fn open(&self, sealed: &SealedSecret, aad: &[u8]) -> anyhow::Result<String>;
}
