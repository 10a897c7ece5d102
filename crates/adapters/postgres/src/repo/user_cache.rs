//! `UserRepo` on Postgres with the users it has read kept in process, for the read every
//! client repeats: `GET /v1/auth/me` (a single-page app asks on every navigation). A hit
//! costs no database transaction at all.
//!
//! A trigger (migration 000009) sends `tenant_id/id` on `trellis_user_changed` whenever
//! a user row is updated or deleted; [`super::notice_cache`] explains how that, local
//! forgetting, the epoch guard and a maximum age keep an entry from being stale for
//! long. Refresh and API-key checks read `active` and `role` through here, and access
//! tokens already carry a role for 15 minutes, so seconds are well inside what the
//! platform tolerates. Inserts need no notice: the cache never remembers a user it did
//! not find.

use super::notice_cache::Watched;
use crate::store::PgStore;
use async_trait::async_trait;
use trellis_identity::{LoginRecord, NewUser, Result, User, UserFilter, UserPatch, UserRepo};
use trellis_kernel::{Email, Page, PageRequest, PasswordHash, TenantCtx, Timestamp, UserId};

/// The channel migration 000009's trigger notifies.
const CHANNEL: &str = "trellis_user_changed";

/// Users kept by default (a few hundred bytes each).
pub const DEFAULT_MAX_CACHED_USERS: usize = 100_000;

/// [`PgStore`]'s users with `get` served from memory while change notices arrive.
#[derive(Clone)]
pub struct PgCachedUsers {
    store: PgStore,
    cache: Watched<UserId, User>,
}

impl PgCachedUsers {
    /// Starts the listener (on its own connection, outside the pool) on the current
    /// Tokio runtime. Until it listens, every read goes to Postgres.
    #[must_use]
    pub fn new(store: PgStore, max_entries: usize) -> Self {
        let cache = Watched::start(&store, CHANNEL, max_entries, UserId::from_uuid);
        Self { store, cache }
    }

    /// Whether reads may currently be answered from memory.
    #[must_use]
    pub fn is_listening(&self) -> bool {
        self.cache.is_listening()
    }
}

#[async_trait]
impl UserRepo for PgCachedUsers {
    async fn insert(&self, ctx: &TenantCtx, new: NewUser) -> Result<User> {
        self.store.insert(ctx, new).await
    }

    async fn get(&self, ctx: &TenantCtx, id: UserId) -> Result<User> {
        self.cache
            .get_or_read((ctx.tenant_id(), id), self.store.get(ctx, id))
            .await
    }

    async fn find_for_login(&self, ctx: &TenantCtx, email: &Email) -> Result<Option<LoginRecord>> {
        self.store.find_for_login(ctx, email).await
    }

    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &UserFilter,
        page: PageRequest,
    ) -> Result<Page<User>> {
        self.store.list(ctx, filter, page).await
    }

    async fn update(&self, ctx: &TenantCtx, id: UserId, patch: UserPatch) -> Result<User> {
        self.cache
            .changing(ctx.tenant_id(), id, self.store.update(ctx, id, patch))
            .await
    }

    async fn set_password(&self, ctx: &TenantCtx, id: UserId, hash: PasswordHash) -> Result<()> {
        self.cache
            .changing(ctx.tenant_id(), id, self.store.set_password(ctx, id, hash))
            .await
    }

    async fn soft_delete(&self, ctx: &TenantCtx, id: UserId, at: Timestamp) -> Result<()> {
        self.cache
            .changing(ctx.tenant_id(), id, self.store.soft_delete(ctx, id, at))
            .await
    }

    async fn record_login(&self, ctx: &TenantCtx, id: UserId, at: Timestamp) -> Result<()> {
        self.cache
            .changing(ctx.tenant_id(), id, self.store.record_login(ctx, id, at))
            .await
    }

    async fn count(&self, ctx: &TenantCtx) -> Result<u64> {
        self.store.count(ctx).await
    }
}
