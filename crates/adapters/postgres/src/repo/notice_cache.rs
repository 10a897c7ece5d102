//! Rows kept in process and dropped when Postgres says they changed: the mechanism
//! behind the user cache and the collection cache.
//!
//! # Why a cached row is never stale for long
//!
//! - A trigger sends `tenant_id/id` on a channel whenever a watched row is updated or
//!   deleted, by anyone, when the change commits (`NOTIFY` is transactional). A
//!   listener task drops that entry.
//! - Changes made through this process drop the entry at once as well, so an instance
//!   reads its own writes without waiting for the notice.
//! - The cache is used only while the listener is connected and listening. When the
//!   connection is lost (notices may have been missed) everything is dropped and reads
//!   go to Postgres until listening again.
//! - A read that was under way while any entry was dropped does not fill the cache (an
//!   epoch counter, checked under the same lock as every change), so an answer older
//!   than a change is never stored after the change's notice.
//! - An entry is at most [`MAX_AGE`] old whatever happens, so a listener that silently
//!   receives nothing (a pooler in transaction mode) cannot keep a row alive for long.
//!
//! What remains is the notice's own delay: another instance may answer from its cache
//! for the few milliseconds between a change's commit and the notice's arrival.
//! Entries are keyed by tenant as well as row, and are filled by reads under the
//! tenant's row-level security, so a tenant only ever finds its own rows.

use crate::store::PgStore;
use sea_orm::sqlx;
use sea_orm::sqlx::postgres::{PgListener, PgPoolOptions};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};
use trellis_kernel::TenantId;

/// How long to wait before listening again after the connection failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// An entry is read again from Postgres after this long even without a notice: the
/// bound on staleness should notices stop arriving unnoticed.
const MAX_AGE: Duration = Duration::from_secs(5);

/// Entries keyed by `(tenant, row id)`.
struct NoticeCache<K, V> {
    entries: RwLock<HashMap<(TenantId, K), (V, Instant)>>,
    /// Bumped, under the write lock, whenever an entry may have changed.
    epoch: AtomicU64,
    listening: AtomicBool,
    max_entries: usize,
}

impl<K, V> NoticeCache<K, V>
where
    K: Eq + Hash + Copy + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new(max_entries: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            max_entries: max_entries.max(1),
        }
    }

    fn lookup(&self, key: &(TenantId, K)) -> Option<V> {
        if !self.is_listening() {
            return None;
        }
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .filter(|(_, at)| at.elapsed() < MAX_AGE)
            .map(|(value, _)| value.clone())
    }

    /// Reads through the cache: `read` runs only on a miss, and what it finds is
    /// kept unless anything changed while it ran.
    async fn get_or_read<E, F>(&self, key: (TenantId, K), read: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.lookup(&key) {
            return Ok(value);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let started = Instant::now();
        let value = read.await?;
        self.fill(epoch, started, key, &value);
        Ok(value)
    }

    /// Stores what a read that started at `epoch` (and `at`) found, unless anything
    /// changed since.
    fn fill(&self, epoch: u64, at: Instant, key: (TenantId, K), value: &V) {
        if !self.is_listening() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= self.max_entries {
            // Rare and cheap to recover from: the next reads fill it again.
            entries.clear();
        }
        entries.insert(key, (value.clone(), at));
    }

    fn forget(&self, key: &(TenantId, K)) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.remove(key);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn forget_all(&self) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.clear();
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }
}

/// A notice's payload, `tenant_id/id`, as a key; `None` for anything else (which
/// drops everything).
fn parse_key<K>(payload: &str, id: fn(uuid::Uuid) -> K) -> Option<(TenantId, K)> {
    let (t, r) = payload.split_once('/')?;
    Some((
        TenantId::from_uuid(uuid::Uuid::parse_str(t).ok()?),
        id(uuid::Uuid::parse_str(r).ok()?),
    ))
}

/// Ends the listener task when the last handle on the cache goes.
struct ListenerGuard(tokio::task::JoinHandle<()>);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A cache and the task that keeps it fresh, as the cached repositories hold them.
/// Clones share both; the task ends with the last clone.
pub(crate) struct Watched<K, V> {
    cache: Arc<NoticeCache<K, V>>,
    _listener: Arc<ListenerGuard>,
}

impl<K, V> Clone for Watched<K, V> {
    fn clone(&self) -> Self {
        Self {
            cache: Arc::clone(&self.cache),
            _listener: Arc::clone(&self._listener),
        }
    }
}

impl<K, V> Watched<K, V>
where
    K: Eq + Hash + Copy + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `max_entries` rows and the task that keeps it fresh from the
    /// notices on `channel` (on its own connection, outside the pool, on the current
    /// Tokio runtime). `id` turns the row id of a notice into the key. Until the task
    /// listens, every read goes to Postgres.
    pub(crate) fn start(
        store: &PgStore,
        channel: &'static str,
        max_entries: usize,
        id: fn(uuid::Uuid) -> K,
    ) -> Self {
        let cache = Arc::new(NoticeCache::new(max_entries));
        let task = tokio::spawn(listen(store.clone(), channel, id, Arc::downgrade(&cache)));
        Self {
            cache,
            _listener: Arc::new(ListenerGuard(task)),
        }
    }

    /// See [`NoticeCache::get_or_read`].
    pub(crate) async fn get_or_read<E, F>(&self, key: (TenantId, K), read: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        self.cache.get_or_read(key, read).await
    }

    /// Runs a change to the row `id` of `tenant`, then drops its entry (the notice
    /// will too, later).
    pub(crate) async fn changing<T, E>(
        &self,
        tenant: TenantId,
        id: K,
        change: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let out = change.await;
        self.cache.forget(&(tenant, id));
        out
    }

    pub(crate) fn is_listening(&self) -> bool {
        self.cache.is_listening()
    }
}

async fn listen<K, V>(
    store: PgStore,
    channel: &'static str,
    id: fn(uuid::Uuid) -> K,
    cache: Weak<NoticeCache<K, V>>,
) where
    K: Eq + Hash + Copy + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    while cache.strong_count() > 0 {
        if let Err(e) = listen_until_lost(&store, channel, id, &cache).await {
            tracing::warn!(error = %e, channel, "could not LISTEN for changes");
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Applies notices until the connection is lost (the cache is then emptied and
/// bypassed) or the cache is gone.
async fn listen_until_lost<K, V>(
    store: &PgStore,
    channel: &'static str,
    id: fn(uuid::Uuid) -> K,
    cache: &Weak<NoticeCache<K, V>>,
) -> Result<(), sqlx::Error>
where
    K: Eq + Hash + Copy + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    // A pool of its own, so the listening connection is not one of the store's: it
    // is held for as long as the listener lives.
    let options = store
        .connection()
        .get_postgres_connection_pool()
        .connect_options();
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*options).clone())
        .await?;
    let mut listener = PgListener::connect_with(&own).await?;
    listener.listen(channel).await?;
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
            Ok(Some(n)) => match parse_key(n.payload(), id) {
                Some(key) => c.forget(&key),
                None => c.forget_all(),
            },
            // `None`: the connection dropped and notices may be lost.
            Ok(None) | Err(_) => {
                c.listening.store(false, Ordering::Release);
                c.forget_all();
                tracing::warn!(
                    channel,
                    "lost the change listener; reading from Postgres until it is back"
                );
                return Ok(());
            }
        }
    }
}
