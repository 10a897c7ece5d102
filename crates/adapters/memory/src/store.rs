//! The shared state behind all in-memory repositories: one lock over plain maps keyed
//! by `(tenant, id)`, so every lookup is tenant-scoped by construction.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use trellis_identity::{ApiKeyRecord, Membership, PlatformAdmin, RefreshToken, User};
use trellis_kernel::{
    ApiKeyId, MembershipId, Page, PageRequest, PasswordHash, PlatformAdminId, TenantId, Timestamp,
    UserId,
};
use trellis_tenancy::{LlmConfig, Tenant, WidgetConfig};

pub(crate) struct TenantRow {
    pub tenant: Tenant,
    pub deleted: bool,
    pub widget: Option<WidgetConfig>,
    pub llm: Option<LlmConfig>,
}

pub(crate) struct UserRow {
    pub user: User,
    pub password_hash: Option<PasswordHash>,
    pub deleted_at: Option<Timestamp>,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub tenants: BTreeMap<TenantId, TenantRow>,
    pub users: BTreeMap<(TenantId, UserId), UserRow>,
    pub memberships: BTreeMap<(TenantId, MembershipId), Membership>,
    pub api_keys: BTreeMap<(TenantId, ApiKeyId), ApiKeyRecord>,
    pub refresh: BTreeMap<(TenantId, String), RefreshToken>,
    pub admins: BTreeMap<PlatformAdminId, (PlatformAdmin, PasswordHash)>,
}

/// All in-memory repositories share one store; clone it freely (it is an `Arc`).
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<RwLock<Inner>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while holding the lock cannot leave a map half-updated in a way that
    // matters more than losing the whole process would, so poisoning is ignored.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) fn now() -> Timestamp {
    chrono::Utc::now()
}

/// Keyset paging over an id-ordered iterator.
pub(crate) fn page_of<T: Clone>(
    items: impl Iterator<Item = T>,
    page: PageRequest,
    id_of: impl Fn(&T) -> uuid::Uuid,
) -> Page<T> {
    let after = page.after().map(|c| c.id());
    let rows: Vec<T> = items
        .filter(|t| after.is_none_or(|a| id_of(t) > a))
        .take(page.limit() as usize + 1)
        .collect();
    page.finish(rows, id_of)
}
