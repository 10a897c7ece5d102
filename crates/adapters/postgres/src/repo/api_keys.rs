//! `ApiKeyRepo` on Postgres.

use crate::entity::api_key::{ActiveModel, Column, Entity, Model};
use crate::error::DomainError as _;
use crate::mapper;
use crate::store::{PgStore, by_position, finish_page, keyset};
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::sqlx::Row as _;
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use trellis_identity::{ApiKey, ApiKeyRecord, ApiKeyRepo, IdentityError as E, NewApiKey, Result};
use trellis_kernel::{ApiKeyId, Page, PageRequest, TenantCtx, Timestamp, UserId};

use super::to_json;

/// The columns of an API key, in the order `find_by_prefix` reads them.
const API_KEY_COLUMNS: [Column; 11] = [
    Column::TenantId,
    Column::Id,
    Column::Name,
    Column::Prefix,
    Column::SecretHash,
    Column::Scopes,
    Column::CreatedBy,
    Column::ExpiresAt,
    Column::LastUsedAt,
    Column::RevokedAt,
    Column::CreatedAt,
];

#[async_trait]
impl ApiKeyRepo for PgStore {
    async fn insert(&self, ctx: &TenantCtx, new: NewApiKey) -> Result<ApiKey> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let row = ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(new.id.as_uuid()),
                    name: Set(new.name),
                    prefix: Set(new.prefix),
                    secret_hash: Set(new.secret_hash),
                    scopes: Set(to_json(&new.scopes, "scopes")?),
                    created_by: Set(new.created_by.as_uuid()),
                    expires_at: Set(new.expires_at),
                    ..Default::default()
                }
                .insert(txn)
                .await
                .map_err(E::db("insert API key"))?;
                Ok(mapper::api_key(row)?)
            })
        })
        .await
    }

    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<ApiKey>> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let select = Entity::find().filter(Column::TenantId.eq(tenant.as_uuid()));
                let rows = keyset(select, Column::Id, page)
                    .all(txn)
                    .await
                    .map_err(E::db("list API keys"))?;
                Ok(finish_page(page, rows, |r| r.id, mapper::api_key)?)
            })
        })
        .await
    }

    async fn find_by_prefix(&self, ctx: &TenantCtx, prefix: &str) -> Result<Option<ApiKeyRecord>> {
        // Every request an API key authenticates starts here: a read of its own,
        // pipelined where the store can, decoded by position.
        let select = Entity::find()
            .filter(Column::TenantId.eq(ctx.tenant_id().as_uuid()))
            .filter(Column::Prefix.eq(prefix));
        let row = self
            .read_columns::<_, _, E>(
                ctx,
                select,
                &API_KEY_COLUMNS,
                by_position!(|row| Model {
                    tenant_id: row.try_get(0)?,
                    id: row.try_get(1)?,
                    name: row.try_get(2)?,
                    prefix: row.try_get(3)?,
                    secret_hash: row.try_get(4)?,
                    scopes: row.try_get(5)?,
                    created_by: row.try_get(6)?,
                    expires_at: row.try_get(7)?,
                    last_used_at: row.try_get(8)?,
                    revoked_at: row.try_get(9)?,
                    created_at: row.try_get(10)?,
                }),
                "find API key by prefix",
            )
            .await?
            .pop();
        Ok(row.map(mapper::api_key_record).transpose()?)
    }

    async fn revoke(&self, ctx: &TenantCtx, id: ApiKeyId, at: Timestamp) -> Result<ApiKey> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                // COALESCE keeps the first revocation time, making revoke idempotent.
                let revoked_at = Expr::col(Column::RevokedAt).if_null(at);
                let row = Entity::update_many()
                    .col_expr(Column::RevokedAt, revoked_at)
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec_with_returning(txn)
                    .await
                    .map_err(E::db("revoke API key"))?
                    .into_iter()
                    .next()
                    .ok_or(E::NotFound("API key"))?;
                Ok(mapper::api_key(row)?)
            })
        })
        .await
    }

    async fn revoke_for_user(&self, ctx: &TenantCtx, user: UserId, at: Timestamp) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                Entity::update_many()
                    .col_expr(Column::RevokedAt, Expr::value(at))
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::CreatedBy.eq(user.as_uuid()))
                    .filter(Column::RevokedAt.is_null())
                    .exec(txn)
                    .await
                    .map_err(E::db("revoke the user's API keys"))?;
                Ok(())
            })
        })
        .await
    }

    async fn touch(&self, ctx: &TenantCtx, id: ApiKeyId, at: Timestamp) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                Entity::update_many()
                    .col_expr(Column::LastUsedAt, Expr::value(at))
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await
                    .map_err(E::db("record API key use"))?;
                Ok(())
            })
        })
        .await
    }
}
