//! What the identity domain needs from storage, token signing and throttling.

use crate::{
    AccessClaims, ApiKey, ApiKeyRecord, LoginRecord, Membership, NewApiKey, NewPlatformAdmin,
    NewUser, PlatformAdmin, RefreshToken, Result, User, UserFilter, UserPatch,
};
use async_trait::async_trait;
use trellis_kernel::{
    ApiKeyId, Email, MembershipId, Page, PageRequest, PasswordHash, PlatformCtx, SessionFamilyId,
    TenantCtx, Timestamp, UserId,
};

/// Where users live. Soft-deleted users are invisible to every method.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait UserRepo: Send + Sync + 'static {
    /// # Errors
    /// `Conflict` when the email is already used in this tenant.
    async fn insert(&self, ctx: &TenantCtx, new: NewUser) -> Result<User>;

    /// # Errors
    /// `NotFound` when no such user exists *in this tenant*.
    async fn get(&self, ctx: &TenantCtx, id: UserId) -> Result<User>;

    /// The user with this email and their password hash, for login.
    async fn find_for_login(&self, ctx: &TenantCtx, email: &Email) -> Result<Option<LoginRecord>>;

    /// Users matching `filter`, oldest first.
    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &UserFilter,
        page: PageRequest,
    ) -> Result<Page<User>>;

    /// # Errors
    /// `NotFound` when no such user exists in this tenant.
    async fn update(&self, ctx: &TenantCtx, id: UserId, patch: UserPatch) -> Result<User>;

    /// # Errors
    /// `NotFound` when no such user exists in this tenant.
    async fn set_password(&self, ctx: &TenantCtx, id: UserId, hash: PasswordHash) -> Result<()>;

    /// # Errors
    /// `NotFound` when no such user exists in this tenant.
    async fn soft_delete(&self, ctx: &TenantCtx, id: UserId, at: Timestamp) -> Result<()>;

    async fn record_login(&self, ctx: &TenantCtx, id: UserId, at: Timestamp) -> Result<()>;

    /// Users that are not deleted (active or not), for the tenant's user limit.
    async fn count(&self, ctx: &TenantCtx) -> Result<u64>;
}

/// Guest memberships, stored in the *host* tenant.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait MembershipRepo: Send + Sync + 'static {
    /// # Errors
    /// `Conflict` when this email is already a guest here.
    async fn insert(&self, ctx: &TenantCtx, membership: Membership) -> Result<Membership>;

    async fn find_by_email(&self, ctx: &TenantCtx, email: &Email) -> Result<Option<Membership>>;

    /// # Errors
    /// `NotFound` when no such membership exists in this tenant.
    async fn get(&self, ctx: &TenantCtx, id: MembershipId) -> Result<Membership>;

    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<Membership>>;

    /// # Errors
    /// `NotFound` when no such membership exists in this tenant.
    async fn delete(&self, ctx: &TenantCtx, id: MembershipId) -> Result<()>;
}

/// API keys.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait ApiKeyRepo: Send + Sync + 'static {
    async fn insert(&self, ctx: &TenantCtx, new: NewApiKey) -> Result<ApiKey>;

    /// Keys of this tenant, revoked ones included, oldest first.
    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<ApiKey>>;

    async fn find_by_prefix(&self, ctx: &TenantCtx, prefix: &str) -> Result<Option<ApiKeyRecord>>;

    /// Marks the key revoked (idempotent: an already revoked key keeps its time).
    ///
    /// # Errors
    /// `NotFound` when no such key exists in this tenant.
    async fn revoke(&self, ctx: &TenantCtx, id: ApiKeyId, at: Timestamp) -> Result<ApiKey>;

    /// Revokes every key created by this user (when the user is deleted).
    async fn revoke_for_user(&self, ctx: &TenantCtx, user: UserId, at: Timestamp) -> Result<()>;

    async fn touch(&self, ctx: &TenantCtx, id: ApiKeyId, at: Timestamp) -> Result<()>;
}

/// Refresh tokens.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait RefreshTokenRepo: Send + Sync + 'static {
    async fn insert(&self, ctx: &TenantCtx, token: RefreshToken) -> Result<()>;

    async fn find_by_hash(&self, ctx: &TenantCtx, token_hash: &str)
    -> Result<Option<RefreshToken>>;

    /// Atomically marks the token used; `false` if it was already used (a replay).
    async fn mark_used(&self, ctx: &TenantCtx, token_hash: &str, at: Timestamp) -> Result<bool>;

    async fn revoke_family(
        &self,
        ctx: &TenantCtx,
        family: SessionFamilyId,
        at: Timestamp,
    ) -> Result<()>;

    async fn revoke_for_user(&self, ctx: &TenantCtx, user: UserId, at: Timestamp) -> Result<()>;
}

/// Platform superadmins.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait PlatformAdminRepo: Send + Sync + 'static {
    /// # Errors
    /// `Conflict` when the email is taken.
    async fn insert(&self, ctx: &PlatformCtx, new: NewPlatformAdmin) -> Result<PlatformAdmin>;

    async fn find_for_login(
        &self,
        ctx: &PlatformCtx,
        email: &Email,
    ) -> Result<Option<(PlatformAdmin, PasswordHash)>>;
}

/// Signs and verifies access tokens (JWT in the crypto adapter).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait TokenSigner: Send + Sync + 'static {
    /// # Errors
    /// Only when signing fails.
    fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String>;

    /// The claims of a token with a valid signature that has not expired.
    fn verify(&self, token: &str) -> Option<AccessClaims>;
}

/// Counts failed logins per key (an account or a client address) and says when to
/// refuse further attempts.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait LoginThrottle: Send + Sync + 'static {
    /// `Some(seconds)` to wait when any of `keys` is locked out.
    fn retry_after(&self, keys: &[String], now: Timestamp) -> Option<u64>;

    fn record_failure(&self, keys: &[String], now: Timestamp);

    fn record_success(&self, keys: &[String]);
}
