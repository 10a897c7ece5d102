//! `Txn`, the transaction every unit of work runs in: a sqlx transaction opened with
//! its scope in the same message as `BEGIN`, wrapped so SeaORM's query builders and
//! entities run on it unchanged (it implements SeaORM's `ConnectionTrait`).
//!
//! SeaORM's own `begin()` sends a bare `BEGIN` and waits for it, and the scope
//! (`SET LOCAL`) then takes a second round trip. On loopback a round trip costs about
//! as much as the statements of a typical read, and every answer of the chat path takes
//! five units of work one after another, so the two are sent as one simple-protocol
//! message here. The tenant id is a UUID and is the only value spliced into that text;
//! everything else goes through bound parameters as before.
//!
//! The scope is set with `SET LOCAL`, not `SELECT set_config(…, true)`, which means the
//! same thing: a simple-protocol message is parsed afresh every time, and a `SELECT`
//! is also analysed, planned, run and sent back as a row, while a utility statement
//! is only parsed. That was about 14 µs of Postgres CPU per unit of work.

use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::{self, AssertSqlSafe, Postgres};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;
use std::sync::Arc;
use tokio::sync::Mutex;
use trellis_kernel::TenantId;

/// Which rows a unit of work may see.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    Tenant(TenantId),
    Platform,
    /// Platform mode plus one tenant: creating a tenant together with its first admin.
    PlatformAndTenant(TenantId),
}

/// Whether a unit of work may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadWrite,
    /// `BEGIN READ ONLY`: Postgres refuses any write, so ending it with a rollback
    /// instead of a commit cannot lose anything.
    ReadOnly,
    /// `BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ`: read-only, and every
    /// statement sees the same snapshot, for reads of several statements that must
    /// agree with each other. Ends like [`Access::ReadOnly`].
    Snapshot,
}

/// The text that opens a unit of work: `BEGIN` and the transaction-local settings the
/// row-level security policies read, in one message. The settings are `LOCAL`, so they
/// end with the transaction and never leak to the next user of a pooled connection.
pub(crate) fn opening_sql(scope: Scope, access: Access) -> String {
    let begin = match access {
        Access::ReadWrite => "BEGIN",
        Access::ReadOnly => "BEGIN READ ONLY",
        Access::Snapshot => "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ",
    };
    // A `TenantId` displays as a hyphenated UUID (hex digits and dashes only), so it
    // cannot close the literal it is placed in.
    match scope {
        Scope::Tenant(id) => format!("{begin}; SET LOCAL trellis.tenant_id = '{id}'"),
        Scope::Platform => format!("{begin}; SET LOCAL trellis.platform = 'on'"),
        Scope::PlatformAndTenant(id) => format!(
            "{begin}; SET LOCAL trellis.platform = 'on'; SET LOCAL trellis.tenant_id = '{id}'"
        ),
    }
}

/// An open, scoped transaction. Statements on it run one at a time (a lock stands in
/// for the exclusive borrow sqlx needs), as on SeaORM's `DatabaseTransaction`.
pub struct Txn {
    inner: Mutex<sqlx::Transaction<'static, Postgres>>,
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Txn")
    }
}

impl Txn {
    /// Opens a transaction on a pooled connection with `scope` already applied.
    pub(crate) async fn open(
        pool: &sqlx::PgPool,
        scope: Scope,
        access: Access,
    ) -> Result<Self, DbErr> {
        let txn = pool
            .begin_with(AssertSqlSafe(opening_sql(scope, access)))
            .await
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))))?;
        Ok(Self {
            inner: Mutex::new(txn),
        })
    }

    /// Commits and waits for the server to confirm it.
    pub(crate) async fn commit(self) -> Result<(), DbErr> {
        self.inner.into_inner().commit().await.map_err(exec_err)
    }

    /// The rows of `stmt` as sqlx returns them, for hot reads that decode by position
    /// instead of through SeaORM's by-name `FromQueryResult` (see `repo::users`).
    pub(crate) async fn rows(&self, stmt: &Statement) -> Result<Vec<PgRow>, DbErr> {
        let mut txn = self.inner.lock().await;
        bound(stmt).fetch_all(&mut **txn).await.map_err(query_err)
    }

    /// Ends the transaction without waiting: sqlx queues a `ROLLBACK` that goes out
    /// with the check the pool makes anyway when the connection comes back, so the
    /// caller does not spend a round trip on it.
    pub(crate) fn release(self) {
        drop(self.inner.into_inner());
    }
}

fn exec_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)))
}

fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))
}

fn bound(stmt: &Statement) -> sqlx::query::Query<'_, Postgres, SqlxValues> {
    let values = stmt.values.clone().unwrap_or(sea_orm::Values(Vec::new()));
    sqlx::query_with(AssertSqlSafe(stmt.sql.as_str()), SqlxValues(values))
}

#[async_trait::async_trait]
impl ConnectionTrait for Txn {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let mut txn = self.inner.lock().await;
        bound(&stmt)
            .execute(&mut **txn)
            .await
            .map(Into::into)
            .map_err(exec_err)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let mut txn = self.inner.lock().await;
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&mut **txn)
            .await
            .map(Into::into)
            .map_err(exec_err)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let mut txn = self.inner.lock().await;
        bound(&stmt)
            .fetch_optional(&mut **txn)
            .await
            .map(|row| row.map(Into::into))
            .map_err(query_err)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut txn = self.inner.lock().await;
        bound(&stmt)
            .fetch_all(&mut **txn)
            .await
            .map(|rows| rows.into_iter().map(Into::into).collect())
            .map_err(query_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_scope_is_set_in_the_same_message_as_begin() {
        let id = TenantId::from_uuid(uuid::Uuid::nil());
        assert_eq!(
            opening_sql(Scope::Tenant(id), Access::ReadOnly),
            "BEGIN READ ONLY; SET LOCAL trellis.tenant_id = \
             '00000000-0000-0000-0000-000000000000'"
        );
        assert!(opening_sql(Scope::Platform, Access::ReadWrite).starts_with("BEGIN; "));
        assert!(
            opening_sql(Scope::Tenant(id), Access::Snapshot)
                .starts_with("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ; ")
        );
    }
}
