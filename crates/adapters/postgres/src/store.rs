//! `PgStore`, the one value that implements every port, and the unit-of-work helpers
//! all repositories go through. Each unit of work is one transaction whose first
//! statement scopes it — `trellis.tenant_id` for tenant work, `trellis.platform` for
//! platform work — so the row-level security policies confine it even if a query
//! forgets its own `tenant_id` filter.

use crate::error::DomainError;
use anyhow::Context as _;
use sea_orm::{
    ColumnTrait as _, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Select, Statement, TransactionTrait,
};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use trellis_kernel::{Page, PageRequest, PlatformCtx, TenantCtx, TenantId};

/// A boxed, sendable future borrowing the transaction it runs in.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long a pooled connection may sit idle before it is pinged on checkout.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(5);

/// Postgres storage for every tenancy and identity port.
#[derive(Clone, Debug)]
pub struct PgStore {
    db: DatabaseConnection,
}

/// Which rows a unit of work may see.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Tenant(TenantId),
    Platform,
    /// Platform mode plus one tenant: creating a tenant together with its first admin.
    PlatformAndTenant(TenantId),
}

impl PgStore {
    /// Connects a pool of at most `max_connections` to `url`, logging in as the
    /// application role (one that owns nothing and has no `BYPASSRLS`).
    ///
    /// # Errors
    /// When the URL is malformed or the server cannot be reached.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.max_connections(max_connections.max(1))
            .min_connections(0)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(10))
            // By default sqlx pings every connection it hands out: one more round trip
            // per unit of work (five instead of four). Only connections idle long
            // enough to have plausibly been dropped are checked; a connection that
            // breaks anyway fails its statement and the pool discards it.
            .test_before_acquire_if_idle_for(IDLE_BEFORE_PING)
            // sqlx would log every statement at INFO, parameters included; that is
            // noise in production and could leak secrets into logs.
            .sqlx_logging(false);
        let db = Database::connect(opts)
            .await
            .context("failed to connect to Postgres")?;
        Ok(Self { db })
    }

    /// Wraps an existing connection pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The underlying pool, for health checks and adapters of other domains.
    #[must_use]
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Runs `f` in a transaction scoped to the caller's tenant.
    pub(crate) async fn in_tenant<T, E, F>(&self, ctx: &TenantCtx, f: F) -> Result<T, E>
    where
        T: Send,
        E: DomainError,
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<T, E>> + Send,
    {
        self.unit_of_work(Scope::Tenant(ctx.tenant_id()), f).await
    }

    /// Runs `f` in a transaction in platform mode. Taking the `PlatformCtx` keeps
    /// platform mode reachable only from platform-scoped port methods.
    pub(crate) async fn in_platform<T, E, F>(&self, _ctx: &PlatformCtx, f: F) -> Result<T, E>
    where
        T: Send,
        E: DomainError,
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<T, E>> + Send,
    {
        self.unit_of_work(Scope::Platform, f).await
    }

    /// Runs `f` in platform mode *and* scoped to `tenant`, for creating a tenant with
    /// its first admin in one transaction.
    pub(crate) async fn in_platform_and_tenant<T, E, F>(
        &self,
        _ctx: &PlatformCtx,
        tenant: TenantId,
        f: F,
    ) -> Result<T, E>
    where
        T: Send,
        E: DomainError,
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<T, E>> + Send,
    {
        self.unit_of_work(Scope::PlatformAndTenant(tenant), f).await
    }

    async fn unit_of_work<T, E, F>(&self, scope: Scope, f: F) -> Result<T, E>
    where
        T: Send,
        E: DomainError,
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<T, E>> + Send,
    {
        // `BEGIN` runs on its own task. sqlx counts a transaction as open only once the
        // server has answered; a request dropped in between (the client hung up) would
        // return the connection to the pool inside that transaction, and the next unit
        // of work on it would commit with its own. On a task the `BEGIN` always
        // completes, and a dropped request's transaction is then rolled back on drop.
        let db = self.db.clone();
        let txn = tokio::spawn(async move { db.begin().await })
            .await
            .map_err(|e| DbErr::Custom(format!("the task beginning a transaction failed: {e}")))
            .and_then(|begun| begun)
            .map_err(E::db("begin a transaction"))?;
        set_scope(&txn, scope)
            .await
            .map_err(E::db("scope the transaction"))?;
        match f(&txn).await {
            Ok(value) => {
                txn.commit()
                    .await
                    .map_err(E::db("commit the transaction"))?;
                Ok(value)
            }
            Err(err) => {
                // The domain error is what the caller needs; a failed rollback only
                // means the connection is broken, and the pool discards it.
                let _ = txn.rollback().await;
                Err(err)
            }
        }
    }
}

/// Sets the transaction-local settings the row-level security policies read. They
/// are `is_local = true`, so they end with the transaction and never leak to the
/// next user of a pooled connection.
async fn set_scope(txn: &DatabaseTransaction, scope: Scope) -> Result<(), DbErr> {
    let stmt = match scope {
        Scope::Tenant(id) => Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config('trellis.tenant_id', $1, true)",
            [id.to_string().into()],
        ),
        Scope::Platform => Statement::from_string(
            DbBackend::Postgres,
            "SELECT set_config('trellis.platform', 'on', true)",
        ),
        Scope::PlatformAndTenant(id) => Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config('trellis.platform', 'on', true), \
                    set_config('trellis.tenant_id', $1, true)",
            [id.to_string().into()],
        ),
    };
    txn.execute_raw(stmt).await?;
    Ok(())
}

/// Adds keyset paging to a query: rows after the cursor id, oldest first (ids are
/// UUIDv7), one more than the limit so `PageRequest::finish` can tell if more exist.
pub(crate) fn keyset<E>(select: Select<E>, id: E::Column, page: PageRequest) -> Select<E>
where
    E: EntityTrait,
{
    let select = match page.after() {
        Some(cursor) => select.filter(id.gt(cursor.id())),
        None => select,
    };
    select.order_by_asc(id).limit(u64::from(page.limit()) + 1)
}

/// Finishes a keyset page of rows and maps them into domain models.
pub(crate) fn finish_page<M, T>(
    page: PageRequest,
    rows: Vec<M>,
    id_of: impl Fn(&M) -> uuid::Uuid,
    map: impl Fn(M) -> anyhow::Result<T>,
) -> anyhow::Result<Page<T>> {
    let page = page.finish(rows, id_of);
    let items = page
        .items
        .into_iter()
        .map(map)
        .collect::<anyhow::Result<Vec<T>>>()?;
    Ok(Page {
        items,
        next_cursor: page.next_cursor,
    })
}
