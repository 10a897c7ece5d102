//! `UsageMeter` and `QuotaSource` on Postgres. Recording is `INSERT … ON CONFLICT
//! (tenant_id, idempotency_key) DO NOTHING`: a retried write, even one racing the
//! first, stores the event once, and the affected-row count says which happened.
//! Totals come from the daily totals a trigger keeps (`usage_days`, migration 000014),
//! with index-only sums over `(tenant_id[, user_id], occurred_at)` for the hours of a
//! window that do not fill a day. Budgets are
//! read in the tenant's scope and set only in platform mode ([`PgStore::set_quota`]).

use super::content_common::db;
use crate::content_mapper;
use crate::entity::{tenant_quota, usage_event};
use crate::store::PgStore;
use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{NaiveDate, NaiveTime};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, DbBackend, EntityTrait as _, NotSet, QueryFilter as _,
    Set, Statement, Value,
};
use trellis_content::{
    Quota, QuotaAdmin, QuotaSource, Recorded, Result, UsageEvent, UsageMeter, UsageScope,
};
use trellis_kernel::{PlatformCtx, TenantCtx, TenantId, Timestamp};

#[async_trait]
impl UsageMeter for PgStore {
    async fn record(&self, ctx: &TenantCtx, event: UsageEvent) -> Result<Recorded> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let row = usage_event::ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(event.id.as_uuid()),
                    idempotency_key: Set(event.idempotency_key),
                    user_id: Set(event.user_id.map(|u| u.as_uuid())),
                    conversation_id: Set(event.conversation_id.map(|c| c.as_uuid())),
                    message_id: Set(event.message_id.map(|m| m.as_uuid())),
                    provider: Set(event.provider.as_str().to_owned()),
                    model: Set(event.model),
                    prompt_tokens: Set(content_mapper::tokens(event.usage.prompt_tokens)),
                    completion_tokens: Set(content_mapper::tokens(event.usage.completion_tokens)),
                    estimated: Set(event.estimated),
                    occurred_at: Set(event.occurred_at),
                    recorded_at: NotSet,
                };
                let inserted = usage_event::Entity::insert(row)
                    .on_conflict(
                        OnConflict::columns([
                            usage_event::Column::TenantId,
                            usage_event::Column::IdempotencyKey,
                        ])
                        .do_nothing()
                        .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await
                    .map_err(db("record usage"))?;
                Ok(if inserted == 0 {
                    Recorded::Duplicate
                } else {
                    Recorded::New
                })
            })
        })
        .await
    }

    async fn total_tokens(
        &self,
        ctx: &TenantCtx,
        scope: UsageScope,
        from: Timestamp,
        until: Timestamp,
    ) -> Result<u64> {
        if until <= from {
            return Ok(0);
        }
        let tenant = ctx.tenant_id();
        let statement = total_statement(tenant, scope, from, until);
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = txn
                    .query_one_raw(statement)
                    .await
                    .map_err(db("sum usage"))?
                    .context("a sum returned no row")?;
                let total: i64 = row.try_get("", "total").map_err(db("read usage sum"))?;
                Ok(u64::try_from(total).context("a negative usage sum")?)
            })
        })
        .await
    }
}

/// `scope_id` of the tenant-wide rows of `usage_days`.
const WHOLE_TENANT: uuid::Uuid = uuid::Uuid::nil();

/// Midnight (UTC) at the start of `day`.
fn midnight(day: NaiveDate) -> Timestamp {
    day.and_time(NaiveTime::MIN).and_utc()
}

/// The whole UTC days inside `[from, until)`, as `[first, end)`, if there are any.
fn whole_days(from: Timestamp, until: Timestamp) -> Option<(NaiveDate, NaiveDate)> {
    let day = from.date_naive();
    let first = if midnight(day) == from {
        day
    } else {
        day.succ_opt()?
    };
    let end = until.date_naive();
    (first < end).then_some((first, end))
}

/// The tokens of `[from, until)` for `scope`: whole days from the daily totals that
/// migration 000014's trigger keeps, and only the hours at either end (none for a
/// budget's day or month, which start and end at midnight) from the events.
fn total_statement(
    tenant: TenantId,
    scope: UsageScope,
    from: Timestamp,
    until: Timestamp,
) -> Statement {
    let scope_id = match scope {
        UsageScope::Tenant => WHOLE_TENANT,
        UsageScope::User(u) => u.as_uuid(),
    };
    let user = match scope {
        UsageScope::Tenant => "",
        UsageScope::User(_) => " AND user_id = $2",
    };
    let mut values: Vec<Value> = vec![tenant.as_uuid().into(), scope_id.into()];
    // The events' share of `[from, until)`, as a term to add; none for an empty range.
    let events = |from: Timestamp, until: Timestamp, values: &mut Vec<Value>| {
        if until <= from {
            return String::new();
        }
        values.push(from.into());
        values.push(until.into());
        let (a, b) = (values.len() - 1, values.len());
        format!(
            " + (SELECT COALESCE(sum(prompt_tokens + completion_tokens), 0) FROM usage_events \
             WHERE tenant_id = $1{user} AND occurred_at >= ${a} AND occurred_at < ${b})"
        )
    };
    let sql = match whole_days(from, until) {
        Some((first, end)) => {
            let head = events(from, midnight(first), &mut values);
            let tail = events(midnight(end), until, &mut values);
            values.push(first.into());
            values.push(end.into());
            let (a, b) = (values.len() - 1, values.len());
            format!(
                "SELECT ((SELECT COALESCE(sum(tokens), 0) FROM usage_days \
                 WHERE tenant_id = $1 AND scope_id = $2 AND day >= ${a} AND day < ${b}){head}{tail})::bigint AS total"
            )
        }
        None => format!(
            "SELECT (0{})::bigint AS total",
            events(from, until, &mut values)
        ),
    };
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

#[async_trait]
impl QuotaSource for PgStore {
    async fn quota(&self, ctx: &TenantCtx) -> Result<Quota> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = tenant_quota::Entity::find_by_id(tenant.as_uuid())
                    .filter(tenant_quota::Column::TenantId.eq(tenant.as_uuid()))
                    .one(txn)
                    .await
                    .map_err(db("load quota"))?;
                Ok(content_mapper::quota(row)?)
            })
        })
        .await
    }
}

#[async_trait]
impl QuotaAdmin for PgStore {
    async fn quota_of(&self, ctx: &PlatformCtx, tenant: TenantId) -> Result<Quota> {
        self.in_platform_and_tenant(ctx, tenant, move |txn| {
            Box::pin(async move {
                let row = tenant_quota::Entity::find_by_id(tenant.as_uuid())
                    .one(txn)
                    .await
                    .map_err(db("load quota"))?;
                Ok(content_mapper::quota(row)?)
            })
        })
        .await
    }

    async fn replace_quota(&self, ctx: &PlatformCtx, tenant: TenantId, quota: Quota) -> Result<()> {
        PgStore::set_quota(self, ctx, tenant, quota).await
    }
}

impl PgStore {
    /// Sets a tenant's token budgets (from its plan). Platform work: a tenant's own
    /// transactions may read their budgets but never change them (row-level security
    /// refuses it, too).
    ///
    /// # Errors
    /// `NotFound` for an unknown tenant; `Unexpected` for a budget beyond `i64::MAX`
    /// tokens or a storage failure.
    pub async fn set_quota(&self, ctx: &PlatformCtx, tenant: TenantId, quota: Quota) -> Result<()> {
        let (tenant_limit, tenant_period) = content_mapper::budget_columns(quota.tenant)?;
        let (user_limit, user_period) = content_mapper::budget_columns(quota.per_user)?;
        self.in_platform_and_tenant(ctx, tenant, move |txn| {
            Box::pin(async move {
                let row = tenant_quota::ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    tenant_limit_tokens: Set(tenant_limit),
                    tenant_period: Set(tenant_period),
                    per_user_limit_tokens: Set(user_limit),
                    per_user_period: Set(user_period),
                    updated_at: NotSet,
                };
                tenant_quota::Entity::insert(row)
                    .on_conflict(
                        OnConflict::column(tenant_quota::Column::TenantId)
                            .update_columns([
                                tenant_quota::Column::TenantLimitTokens,
                                tenant_quota::Column::TenantPeriod,
                                tenant_quota::Column::PerUserLimitTokens,
                                tenant_quota::Column::PerUserPeriod,
                            ])
                            .value(tenant_quota::Column::UpdatedAt, Expr::current_timestamp())
                            .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await
                    .map_err(db("set quota"))?;
                Ok(())
            })
        })
        .await
    }
}
