//! `PgStore`, the one value that implements every port, and the unit-of-work helpers
//! all repositories go through. Each unit of work is one transaction ([`Txn`]) opened
//! together with its scope — `trellis.tenant_id` for tenant work, `trellis.platform`
//! for platform work — so the row-level security policies confine it even if a query
//! forgets its own `tenant_id` filter.

use crate::error::DomainError;
use crate::pipelined::PipelinedReads;
use crate::txn::{Access, Scope, Txn};
use anyhow::Context as _;
use sea_orm::{
    ColumnTrait as _, ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait as _, Select, sqlx,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use trellis_kernel::{Page, PageRequest, PlatformCtx, TenantCtx, TenantId};

/// A boxed, sendable future borrowing the transaction it runs in.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long a pooled connection may sit idle before it is pinged on checkout.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(5);

/// Postgres storage for every tenancy and identity port.
#[derive(Clone, Debug)]
pub struct PgStore {
    db: DatabaseConnection,
    /// The same pool as `db`, as sqlx sees it: units of work open their transactions
    /// on it directly ([`Txn`]).
    pool: sqlx::PgPool,
    /// Permits for transactions handed back uncommitted, at most half the pool; `None`
    /// for a pool of one, which has no connection to spare. Such a transaction keeps its
    /// connection while the caller reads through others; were every connection held
    /// that way, those reads would wait for a connection that only they could free.
    uncommitted: Option<Arc<Semaphore>>,
    /// Where hot reads go as one pipeline instead of a round trip per statement
    /// (see [`PipelinedReads`]); `None`: they take the sqlx path.
    pipelined: Option<Arc<PipelinedReads>>,
}

/// The most connections pipelined reads open unless told otherwise. On two cores
/// shared with Postgres, 8 served up to 1.3× the requests of 16 on the agents and
/// conversations lists, at the same p99 (`docs/benchmarks.md`, session 19).
pub const DEFAULT_PIPELINED_CONNECTIONS: usize = 8;

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
        let mut store = Self::new(db);
        let max = usize::try_from(max_connections.max(1))
            .unwrap_or(1)
            .min(DEFAULT_PIPELINED_CONNECTIONS);
        match PipelinedReads::for_url(url, max) {
            Ok(reads) => match reads.verify(&store.pool).await {
                Ok(()) => store.pipelined = Some(Arc::new(reads)),
                Err(why) => tracing::info!("pipelined reads take the sqlx path: {why:#}"),
            },
            Err(why) => tracing::info!("pipelined reads take the sqlx path: {why}"),
        }
        Ok(store)
    }

    /// The same store with every read on the sqlx path: for an operator who wants one
    /// pool of connections only (`TRELLIS_DB_PIPELINED_READS=false`), and for tests
    /// of that path.
    #[must_use]
    pub fn without_pipelined_reads(mut self) -> Self {
        self.pipelined = None;
        self
    }

    /// The same store opening at most `max` connections (at least one) for pipelined
    /// reads, which share them (`PipelinedReads`); by default
    /// [`DEFAULT_PIPELINED_CONNECTIONS`], or the main pool's size where that is
    /// smaller. Fewer connections, each kept busier, cost Postgres and the server less
    /// per read under load, but a read waits for the answers queued before it on its
    /// connection, and a busier backend is held off the CPU longer when the machine is
    /// short of it (`docs/benchmarks.md`, sessions 18 and 19, has both sides measured).
    #[must_use]
    pub fn with_pipelined_connections(self, max: usize) -> Self {
        if let Some(reads) = &self.pipelined {
            reads.set_max_connections(max);
        }
        self
    }

    /// The same store for a server that runs `runtimes` single-threaded runtimes, one
    /// per thread, each marked with [`crate::enter_runtime`]: pipelined reads made on
    /// each runtime use connections that runtime opened (their share of the most,
    /// rounded down, at least one), so a read waits for another thread to run its
    /// connection only when it is sent again there ([`crate::pipelined`]).
    /// Call it before any read: connections opened so far are let go.
    #[must_use]
    pub fn with_runtimes(mut self, runtimes: usize) -> Self {
        if let Some(reads) = &self.pipelined {
            self.pipelined = Some(Arc::new(reads.for_runtimes(runtimes)));
        }
        self
    }

    /// How many runtimes pipelined reads keep connections apart for, `None` where
    /// reads are not pipelined.
    #[must_use]
    pub fn pipelined_runtimes(&self) -> Option<usize> {
        self.pipelined.as_ref().map(|reads| reads.runtimes())
    }

    /// The most connections pipelined reads open, `None` where reads are not pipelined.
    #[must_use]
    pub fn pipelined_connections(&self) -> Option<usize> {
        self.pipelined.as_ref().map(|reads| reads.max_connections())
    }

    /// What pipelined reads counted (reads sent again on another connection), `None`
    /// where reads are not pipelined. `/metrics` shows it.
    #[must_use]
    pub fn pipelined_counts(&self) -> Option<crate::PipelinedCounts> {
        self.pipelined.as_ref().map(|reads| reads.counts())
    }

    /// Whether hot reads are sent as one pipeline each.
    #[must_use]
    pub fn pipelines_reads(&self) -> bool {
        self.pipelined.is_some()
    }

    /// Runs `stmts` as one read of their own in the caller's tenant, pipelined where
    /// this store can (see `crate::pipelined`), else in a read-only unit of work on
    /// sqlx. Several statements read one snapshot, so they agree with each other. The
    /// rows come back as the client that fetched them gave them: read them with
    /// [`Fetched::decode`].
    pub(crate) async fn fetch<E: DomainError>(
        &self,
        ctx: &TenantCtx,
        stmts: Vec<sea_orm::Statement>,
        what: &'static str,
    ) -> Result<Fetched, E> {
        let failed = move |e: anyhow::Error| E::from(e.context(format!("failed to {what}")));
        let access = if stmts.len() > 1 {
            Access::Snapshot
        } else {
            Access::ReadOnly
        };
        if let Some(reads) = self.pipelined.as_deref() {
            let rows = reads
                .rows(Scope::Tenant(ctx.tenant_id()), access, &stmts)
                .await
                .map_err(failed)?;
            if let Some(rows) = rows {
                return Ok(Fetched::Pipelined(rows));
            }
        }
        self.unit_of_work(Scope::Tenant(ctx.tenant_id()), access, move |txn| {
            Box::pin(async move {
                let mut sets = Vec::with_capacity(stmts.len());
                for stmt in &stmts {
                    sets.push(txn.rows(stmt).await.map_err(E::db(what))?);
                }
                Ok(Fetched::Sqlx(sets))
            })
        })
        .await
    }

    /// Runs one `SELECT` of exactly `columns` as a read of its own in the caller's
    /// tenant ([`Self::fetch`]), and reads each row by position with the decoder for
    /// the client that fetched it.
    pub(crate) async fn read_by_position<T, E, C>(
        &self,
        ctx: &TenantCtx,
        stmt: sea_orm::Statement,
        columns: &'static [C],
        decoders: Decoders<T>,
        what: &'static str,
    ) -> Result<Vec<T>, E>
    where
        E: DomainError,
        C: sea_orm::Iden,
    {
        self.fetch::<E>(ctx, vec![stmt], what)
            .await?
            .decode(0, columns, decoders)
            .map_err(|e| E::from(e.context(format!("failed to {what}"))))
    }

    /// [`Self::read_by_position`] of `select` narrowed to exactly `columns`, in their
    /// order: the one list both picks what is selected and checks what came back.
    pub(crate) async fn read_columns<En, T, E>(
        &self,
        ctx: &TenantCtx,
        select: Select<En>,
        columns: &'static [En::Column],
        decoders: Decoders<T>,
        what: &'static str,
    ) -> Result<Vec<T>, E>
    where
        En: EntityTrait,
        En::Column: Sync,
        T: Send + 'static,
        E: DomainError,
    {
        self.read_by_position(
            ctx,
            select_columns(select, columns),
            columns,
            decoders,
            what,
        )
        .await
    }

    /// Wraps an existing connection pool.
    ///
    /// # Panics
    /// When `db` is not a Postgres pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        let pool = db.get_postgres_connection_pool().clone();
        let held = usize::try_from(pool.options().get_max_connections() / 2).unwrap_or(0);
        Self {
            db,
            pool,
            uncommitted: (held > 0).then(|| Arc::new(Semaphore::new(held))),
            pipelined: None,
        }
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
        F: for<'t> FnOnce(&'t Txn) -> BoxFuture<'t, Result<T, E>> + Send,
    {
        self.unit_of_work(Scope::Tenant(ctx.tenant_id()), Access::ReadWrite, f)
            .await
    }

    /// Runs `f` in a read-only transaction scoped to the caller's tenant. It ends
    /// without a round trip of its own (see [`Txn::release`]); Postgres refuses any
    /// write in it, so a repository method put on this path by mistake fails loudly.
    pub(crate) async fn in_tenant_read<T, E, F>(&self, ctx: &TenantCtx, f: F) -> Result<T, E>
    where
        T: Send,
        E: DomainError,
        F: for<'t> FnOnce(&'t Txn) -> BoxFuture<'t, Result<T, E>> + Send,
    {
        self.unit_of_work(Scope::Tenant(ctx.tenant_id()), Access::ReadOnly, f)
            .await
    }

    /// Runs `f` in a transaction in platform mode. Taking the `PlatformCtx` keeps
    /// platform mode reachable only from platform-scoped port methods.
    pub(crate) async fn in_platform<T, E, F>(&self, _ctx: &PlatformCtx, f: F) -> Result<T, E>
    where
        T: Send,
        E: DomainError,
        F: for<'t> FnOnce(&'t Txn) -> BoxFuture<'t, Result<T, E>> + Send,
    {
        self.unit_of_work(Scope::Platform, Access::ReadWrite, f)
            .await
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
        F: for<'t> FnOnce(&'t Txn) -> BoxFuture<'t, Result<T, E>> + Send,
    {
        self.unit_of_work(Scope::PlatformAndTenant(tenant), Access::ReadWrite, f)
            .await
    }

    /// Whether a transaction may be handed back uncommitted at all (the pool has room
    /// for one besides the reads its caller makes meanwhile).
    pub(crate) fn can_hold_uncommitted(&self) -> bool {
        self.uncommitted.is_some()
    }

    /// Runs `f` in a transaction scoped to the caller's tenant and hands back the
    /// transaction still open, for the caller to commit later or drop (which rolls it
    /// back): a write whose commit waits for a decision made elsewhere. Only when
    /// [`Self::can_hold_uncommitted`].
    pub(crate) async fn in_tenant_uncommitted<T, E, F>(
        &self,
        ctx: &TenantCtx,
        f: F,
    ) -> Result<(T, Uncommitted), E>
    where
        T: Send,
        E: DomainError,
        F: for<'t> FnOnce(&'t Txn) -> BoxFuture<'t, Result<T, E>> + Send,
    {
        let permit = match &self.uncommitted {
            Some(permits) => Arc::clone(permits).acquire_owned().await.ok(),
            None => None,
        }
        .ok_or_else(|| DbErr::Custom("no connection to spare for an open transaction".into()))
        .map_err(E::db("wait for a connection to hold"))?;
        let (value, txn) = self
            .run(Scope::Tenant(ctx.tenant_id()), Access::ReadWrite, f)
            .await?;
        Ok((
            value,
            Uncommitted {
                txn,
                _permit: permit,
            },
        ))
    }

    /// Opens a transaction and runs `f` in it; on failure the transaction is already
    /// rolled back, on success it is handed back open.
    async fn run<T, E, F>(&self, scope: Scope, access: Access, f: F) -> Result<(T, Txn), E>
    where
        T: Send,
        E: DomainError,
        F: for<'t> FnOnce(&'t Txn) -> BoxFuture<'t, Result<T, E>> + Send,
    {
        // The opening runs on its own task. sqlx counts a transaction as open only once
        // the server has answered; a request dropped in between (the client hung up)
        // would return the connection to the pool inside that transaction, and the next
        // unit of work on it would commit with its own. On a task the opening always
        // completes, and a dropped request's transaction is then rolled back on drop.
        let pool = self.pool.clone();
        let txn = tokio::spawn(async move { Txn::open(&pool, scope, access).await })
            .await
            .map_err(|e| DbErr::Custom(format!("the task beginning a transaction failed: {e}")))
            .and_then(|opened| opened)
            .map_err(E::db("begin a transaction"))?;
        match f(&txn).await {
            Ok(value) => Ok((value, txn)),
            Err(err) => {
                // The domain error is what the caller needs; the rollback goes out with
                // the pool's check of the returned connection, and a broken connection
                // is discarded there.
                txn.release();
                Err(err)
            }
        }
    }

    async fn unit_of_work<T, E, F>(&self, scope: Scope, access: Access, f: F) -> Result<T, E>
    where
        T: Send,
        E: DomainError,
        F: for<'t> FnOnce(&'t Txn) -> BoxFuture<'t, Result<T, E>> + Send,
    {
        let (value, txn) = self.run(scope, access, f).await?;
        match access {
            Access::ReadWrite => txn
                .commit()
                .await
                .map_err(E::db("commit the transaction"))?,
            Access::ReadOnly | Access::Snapshot => txn.release(),
        }
        Ok(value)
    }
}

/// A transaction handed back open by [`PgStore::in_tenant_uncommitted`], with its
/// share of the pool. Dropping it rolls it back.
pub(crate) struct Uncommitted {
    txn: Txn,
    _permit: OwnedSemaphorePermit,
}

impl Uncommitted {
    /// Commits and waits for the server to confirm it.
    pub(crate) async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await
    }
}

/// How [`PgStore::read_by_position`] reads a row from either client; made with
/// [`by_position!`].
pub(crate) struct Decoders<T> {
    pub(crate) pipelined: fn(&tokio_postgres::Row) -> Result<T, tokio_postgres::Error>,
    pub(crate) sqlx: fn(&sqlx::postgres::PgRow) -> Result<T, sqlx::Error>,
}

/// [`Decoders`] from one expression that builds a value out of `$row`, for both
/// clients: each reads a column with `$row.try_get(position)?` (sqlx's `Row` trait must
/// be in scope).
macro_rules! by_position {
    (|$row:ident| $value:expr) => {
        $crate::store::Decoders {
            pipelined: |$row: &tokio_postgres::Row| Ok($value),
            sqlx: |$row: &sea_orm::sqlx::postgres::PgRow| Ok($value),
        }
    };
}
pub(crate) use by_position;

/// `select` narrowed to exactly `columns`, in their order, as the statement to send.
pub(crate) fn select_columns<En>(select: Select<En>, columns: &[En::Column]) -> sea_orm::Statement
where
    En: EntityTrait,
{
    select
        .select_only()
        .columns(columns.iter().copied())
        .build(DbBackend::Postgres)
}

/// The rows of each statement of a read ([`PgStore::fetch`]), in the order the
/// statements were given, from whichever client fetched them.
pub(crate) enum Fetched {
    Pipelined(Vec<Vec<tokio_postgres::Row>>),
    Sqlx(Vec<Vec<sqlx::postgres::PgRow>>),
}

impl Fetched {
    /// Statement `i`'s rows, each read by position with the decoder for the client
    /// that fetched it, after checking the columns are `columns`.
    pub(crate) fn decode<T, C: sea_orm::Iden>(
        &self,
        i: usize,
        columns: &[C],
        decoders: Decoders<T>,
    ) -> anyhow::Result<Vec<T>> {
        match self {
            Self::Pipelined(sets) => {
                let names = |r: &tokio_postgres::Row| {
                    r.columns().iter().map(|c| c.name().to_owned()).collect()
                };
                let rows = sets.get(i).context("the read has no such statement")?;
                decode_rows(rows, names, columns, decoders.pipelined)
            }
            Self::Sqlx(sets) => {
                use sqlx::{Column as _, Row as _};
                let names = |r: &sqlx::postgres::PgRow| {
                    r.columns().iter().map(|c| c.name().to_owned()).collect()
                };
                let rows = sets.get(i).context("the read has no such statement")?;
                decode_rows(rows, names, columns, decoders.sqlx)
            }
        }
    }
}

/// Reads every row with `decode`, after checking the first row's column names (once
/// per query) against `expected`.
fn decode_rows<R, T, X, C>(
    rows: &[R],
    names: impl FnOnce(&R) -> Vec<String>,
    expected: &[C],
    decode: fn(&R) -> Result<T, X>,
) -> anyhow::Result<Vec<T>>
where
    X: std::error::Error + Send + Sync + 'static,
    C: sea_orm::Iden,
{
    if let Some(first) = rows.first() {
        anyhow::ensure!(
            names(first)
                .into_iter()
                .eq(expected.iter().map(|c| c.to_string())),
            "the query returned other columns than the decoder reads"
        );
    }
    Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
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
