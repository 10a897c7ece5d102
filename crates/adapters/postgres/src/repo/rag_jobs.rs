//! `JobQueue` on Postgres: durable jobs, leased with `FOR UPDATE SKIP LOCKED`.
//!
//! - `enqueue` runs in the caller's tenant.
//! - `claim` is the one operation that looks across tenants. It runs in *worker mode*
//!   (`trellis.worker = on` for its transaction), which the `jobs` policy admits and no
//!   other table's does.
//! - `complete`, `retry` and `fail` run in the job's own tenant (a `ClaimedJob` names
//!   it), so worker mode stays as narrow as it can be.
//!
//! A claim increments `attempts`, and the claimed attempt number fences the later
//! calls: a worker whose lease ran out and whose job was claimed again finds its
//! `complete`/`retry`/`fail` matching no row, and the job stays with the new holder.

use super::rag_common::db;
use crate::entity::job::{self, ActiveModel, Column, Entity};
use crate::rag_mapper;
use crate::store::PgStore;
use anyhow::Context as _;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait as _, DbBackend, EntityTrait as _,
    FromQueryResult as _, QueryFilter as _, Set, Statement, TransactionTrait as _,
};
use trellis_kernel::{TenantCtx, Timestamp};
use trellis_rag::{ClaimedJob, JobId, JobKind, JobQueue, RagError, Result};

/// Takes the oldest due job: queued and due, or running with its lease run out (its
/// worker died). `SKIP LOCKED` lets concurrent claimers pass over each other's rows
/// instead of queueing behind them, so no job is handed out twice.
const CLAIM: &str = "
UPDATE jobs SET status = 'running', attempts = attempts + 1,
       lease_until = now() + make_interval(secs => $1), updated_at = now()
 WHERE (tenant_id, id) = (
       SELECT tenant_id, id FROM jobs
        WHERE (status = 'queued' AND run_at <= now())
           OR (status = 'running' AND lease_until < now())
        ORDER BY run_at
        LIMIT 1
          FOR UPDATE SKIP LOCKED)
RETURNING *";

/// A lease in seconds, to the microsecond Postgres intervals keep.
fn lease_seconds(lease: chrono::Duration) -> Result<f64> {
    #[allow(clippy::cast_precision_loss)]
    let seconds = lease.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
    if seconds <= 0.0 {
        return Err(anyhow::anyhow!("a job lease must be positive, got {lease}").into());
    }
    Ok(seconds)
}

/// Truncates an error message to what is worth keeping in a row.
fn error_text(error: &str) -> String {
    error.chars().take(4_000).collect()
}

impl PgStore {
    /// Ends one claim of `job` with `values`, in the job's tenant. Matching only the
    /// claimed attempt of a running job makes a stale worker's call a no-op.
    async fn finish_claim(
        &self,
        job: &ClaimedJob,
        values: Vec<(Column, SimpleExpr)>,
        what: &'static str,
    ) -> Result<()> {
        let ctx = TenantCtx::system(job.tenant_id);
        let tenant = job.tenant_id;
        let id = job.id;
        let attempt = i32::try_from(job.attempt).context("job attempt is out of range")?;
        self.in_tenant(&ctx, move |txn| {
            Box::pin(async move {
                let mut update = Entity::update_many()
                    .col_expr(Column::LeaseUntil, Expr::value(Option::<Timestamp>::None))
                    .col_expr(Column::UpdatedAt, Expr::current_timestamp());
                for (col, value) in values {
                    update = update.col_expr(col, value);
                }
                // Zero rows means the lease was lost to another worker, which now owns
                // the job; the port has no error for that, and the new holder will
                // finish it either way.
                update
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .filter(Column::Status.eq("running"))
                    .filter(Column::Attempts.eq(attempt))
                    .exec(txn)
                    .await
                    .map_err(db(what))?;
                Ok(())
            })
        })
        .await
    }
}

#[async_trait]
impl JobQueue for PgStore {
    async fn enqueue(&self, ctx: &TenantCtx, kind: JobKind) -> Result<JobId> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let id = JobId::new();
                let (kind, payload) = rag_mapper::job_columns(&kind);
                ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(id.as_uuid()),
                    kind: Set(kind.to_owned()),
                    payload: Set(payload),
                    status: Set("queued".to_owned()),
                    attempts: Set(0),
                    ..Default::default()
                }
                .insert(txn)
                .await
                .map_err(db("enqueue job"))?;
                Ok(id)
            })
        })
        .await
    }

    async fn claim(&self, lease: chrono::Duration) -> Result<Option<ClaimedJob>> {
        let seconds = lease_seconds(lease)?;
        // Not through `in_tenant`: this is the one cross-tenant unit of work, and it
        // switches on worker mode instead of a tenant (transaction-local, like every
        // scope setting).
        let txn = self
            .connection()
            .begin()
            .await
            .map_err(db("begin a transaction"))?;
        let claimed = async {
            txn.execute_unprepared("SELECT set_config('trellis.worker', 'on', true)")
                .await
                .map_err(db("enter worker mode"))?;
            let stmt = Statement::from_sql_and_values(DbBackend::Postgres, CLAIM, [seconds.into()]);
            let row = job::Model::find_by_statement(stmt)
                .one(&txn)
                .await
                .map_err(db("claim a job"))?;
            Ok::<_, RagError>(row.map(rag_mapper::claimed_job).transpose()?)
        }
        .await;
        match claimed {
            Ok(job) => {
                txn.commit().await.map_err(db("commit the claim"))?;
                Ok(job)
            }
            Err(err) => {
                // The error is what matters; a failed rollback means a broken
                // connection, which the pool discards.
                let _ = txn.rollback().await;
                Err(err)
            }
        }
    }

    async fn extend(&self, job: &ClaimedJob, lease: chrono::Duration) -> Result<bool> {
        let seconds = lease_seconds(lease)?;
        let ctx = TenantCtx::system(job.tenant_id);
        let (tenant, id) = (job.tenant_id, job.id);
        let attempt = i32::try_from(job.attempt).context("job attempt is out of range")?;
        self.in_tenant(&ctx, move |txn| {
            Box::pin(async move {
                let stmt = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "UPDATE jobs SET lease_until = now() + make_interval(secs => $1),
                            updated_at = now()
                      WHERE tenant_id = $2 AND id = $3 AND status = 'running' AND attempts = $4",
                    [
                        seconds.into(),
                        tenant.as_uuid().into(),
                        id.as_uuid().into(),
                        attempt.into(),
                    ],
                );
                let done = txn
                    .execute_raw(stmt)
                    .await
                    .map_err(db("extend a job lease"))?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    async fn complete(&self, job: &ClaimedJob) -> Result<()> {
        let values = vec![(Column::Status, Expr::value("done"))];
        self.finish_claim(job, values, "complete job").await
    }

    async fn retry(&self, job: &ClaimedJob, error: &str, retry_at: Timestamp) -> Result<()> {
        let values = vec![
            (Column::Status, Expr::value("queued")),
            (Column::RunAt, Expr::value(retry_at)),
            (Column::LastError, Expr::value(error_text(error))),
        ];
        self.finish_claim(job, values, "reschedule job").await
    }

    async fn fail(&self, job: &ClaimedJob, error: &str) -> Result<()> {
        let values = vec![
            (Column::Status, Expr::value("failed")),
            (Column::LastError, Expr::value(error_text(error))),
        ];
        self.finish_claim(job, values, "fail job").await
    }
}
