//! `UserRepo` on Postgres with the users it has read kept in process, for the read every
//! client repeats: `GET /v1/auth/me` (a single-page app asks on every navigation). A hit
//! costs no database transaction at all.
//!
//! # Why a cached user is never stale for long
//!
//! - A trigger (migration 000009) sends `tenant_id/id` on `trellis_user_changed` whenever
//!   a user row is updated or deleted, by anyone, when the change commits. A listener
//!   task drops that entry from the cache.
//! - Changes made through this repository drop the entry at once as well, so an
//!   instance reads its own writes without waiting for the notice.
//! - The cache is used only while the listener is connected and listening. When the
//!   connection is lost (notices may have been missed) everything is dropped and reads
//!   go to Postgres until listening again.
//! - A read that was under way while any entry was dropped does not fill the cache (an
//!   epoch counter, checked under the same lock as every change), so an answer older
//!   than a change is never stored after the change's notice.
//!
//! - An entry is at most a few seconds old (`MAX_AGE`) whatever happens, so a
//!   listener that silently receives nothing (a pooler in transaction mode) cannot keep
//!   a deactivated user active for long.
//!
//! What remains is the notice's own delay: another instance may answer from its cache
//! for the few milliseconds between a change's commit and the notice's arrival.
//! Entries are keyed by tenant as well as user, so a tenant only ever finds its own
//! users (the read that fills an entry runs under the tenant's row-level security).

use crate::store::PgStore;
use async_trait::async_trait;
use sea_orm::sqlx;
use sea_orm::sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};
use trellis_identity::{LoginRecord, NewUser, Result, User, UserFilter, UserPatch, UserRepo};
use trellis_kernel::{
    Email, Page, PageRequest, PasswordHash, TenantCtx, TenantId, Timestamp, UserId,
};

/// The channel migration 000009's trigger notifies.
const CHANNEL: &str = "trellis_user_changed";

/// How long to wait before listening again after the connection failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Users kept by default (a few hundred bytes each).
pub const DEFAULT_MAX_CACHED_USERS: usize = 100_000;

/// An entry is read again from Postgres after this long even without a notice: the
/// bound on staleness should notices stop arriving unnoticed (a pooler in transaction
/// mode between Trellis and Postgres swallows them). Refresh and API-key checks read
/// `active` and `role` through here, and access tokens already carry a role for 15
/// minutes, so seconds are well inside what the platform tolerates.
const MAX_AGE: Duration = Duration::from_secs(5);

type Key = (TenantId, UserId);

struct Cache {
    entries: RwLock<HashMap<Key, (User, Instant)>>,
    /// Bumped, under the write lock, whenever an entry may have changed.
    epoch: AtomicU64,
    listening: AtomicBool,
    max_entries: usize,
}

impl Cache {
    fn lookup(&self, key: &Key) -> Option<User> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .filter(|(_, at)| at.elapsed() < MAX_AGE)
            .map(|(user, _)| user.clone())
    }

    /// Stores what a read that started at `epoch` (and `at`) found, unless anything
    /// changed since.
    fn fill(&self, epoch: u64, at: Instant, user: &User) {
        if !self.listening.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= self.max_entries {
            // Rare and cheap to recover from: the next reads fill it again.
            entries.clear();
        }
        entries.insert((user.tenant_id, user.id), (user.clone(), at));
    }

    fn forget(&self, key: &Key) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.remove(key);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn forget_all(&self) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.clear();
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// A notice's payload, `tenant_id/id`; anything else drops everything.
    fn forget_notice(&self, payload: &str) {
        let key = payload.split_once('/').and_then(|(t, u)| {
            Some((
                TenantId::from_uuid(uuid::Uuid::parse_str(t).ok()?),
                UserId::from_uuid(uuid::Uuid::parse_str(u).ok()?),
            ))
        });
        match key {
            Some(k) => self.forget(&k),
            None => self.forget_all(),
        }
    }
}

/// Ends the listener task when the last handle on the cache goes.
struct ListenerGuard(tokio::task::JoinHandle<()>);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`PgStore`]'s users with `get` served from memory while change notices arrive.
#[derive(Clone)]
pub struct PgCachedUsers {
    store: PgStore,
    cache: Arc<Cache>,
    _listener: Arc<ListenerGuard>,
}

impl PgCachedUsers {
    /// Starts the listener (on its own connection, outside the pool) on the current
    /// Tokio runtime. Until it listens, every read goes to Postgres.
    #[must_use]
    pub fn new(store: PgStore, max_entries: usize) -> Self {
        let cache = Arc::new(Cache {
            entries: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            max_entries: max_entries.max(1),
        });
        let task = tokio::spawn(listen(store.clone(), Arc::downgrade(&cache)));
        Self {
            store,
            cache,
            _listener: Arc::new(ListenerGuard(task)),
        }
    }

    /// Whether reads may currently be answered from memory.
    #[must_use]
    pub fn is_listening(&self) -> bool {
        self.cache.listening.load(Ordering::Acquire)
    }

    /// Runs a change, then drops the user's entry (the notice will too, later).
    async fn changing<T>(
        &self,
        ctx: &TenantCtx,
        id: UserId,
        change: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let out = change.await;
        self.cache.forget(&(ctx.tenant_id(), id));
        out
    }
}

async fn listen(store: PgStore, cache: Weak<Cache>) {
    while cache.strong_count() > 0 {
        if let Err(e) = listen_until_lost(&store, &cache).await {
            tracing::warn!(error = %e, "could not LISTEN for user changes");
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Applies notices until the connection is lost (the cache is then emptied and
/// bypassed) or the cache is gone.
async fn listen_until_lost(store: &PgStore, cache: &Weak<Cache>) -> Result<(), sqlx::Error> {
    let pool = store.connection().get_postgres_connection_pool();
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    let Some(c) = cache.upgrade() else {
        return Ok(());
    };
    // Whatever happened while not listening is unknown: start empty.
    c.forget_all();
    c.listening.store(true, Ordering::Release);
    drop(c);
    loop {
        let notice = listener.try_recv().await;
        let Some(c) = cache.upgrade() else {
            return Ok(());
        };
        match notice {
            Ok(Some(n)) => c.forget_notice(n.payload()),
            // `None`: the connection dropped and notices may be lost.
            Ok(None) | Err(_) => {
                c.listening.store(false, Ordering::Release);
                c.forget_all();
                tracing::warn!(
                    "lost the user-change listener; reading users from Postgres until it is back"
                );
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl UserRepo for PgCachedUsers {
    async fn insert(&self, ctx: &TenantCtx, new: NewUser) -> Result<User> {
        self.store.insert(ctx, new).await
    }

    async fn get(&self, ctx: &TenantCtx, id: UserId) -> Result<User> {
        let key = (ctx.tenant_id(), id);
        if let Some(user) = self.cache.lookup(&key) {
            return Ok(user);
        }
        let epoch = self.cache.epoch.load(Ordering::Acquire);
        let started = Instant::now();
        let user = self.store.get(ctx, id).await?;
        self.cache.fill(epoch, started, &user);
        Ok(user)
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
        self.changing(ctx, id, self.store.update(ctx, id, patch))
            .await
    }

    async fn set_password(&self, ctx: &TenantCtx, id: UserId, hash: PasswordHash) -> Result<()> {
        self.changing(ctx, id, self.store.set_password(ctx, id, hash))
            .await
    }

    async fn soft_delete(&self, ctx: &TenantCtx, id: UserId, at: Timestamp) -> Result<()> {
        self.changing(ctx, id, self.store.soft_delete(ctx, id, at))
            .await
    }

    async fn record_login(&self, ctx: &TenantCtx, id: UserId, at: Timestamp) -> Result<()> {
        self.changing(ctx, id, self.store.record_login(ctx, id, at))
            .await
    }

    async fn count(&self, ctx: &TenantCtx) -> Result<u64> {
        self.store.count(ctx).await
    }
}
