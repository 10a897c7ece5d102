//! `RefreshTokenRepo` on Postgres. `mark_used` is a single conditional `UPDATE`, so of
//! two concurrent refreshes with one token exactly one wins.

use crate::entity::refresh_token::{ActiveModel, Column, Entity};
use crate::error::DomainError as _;
use crate::mapper;
use crate::store::PgStore;
use async_trait::async_trait;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use trellis_identity::{IdentityError as E, RefreshToken, RefreshTokenRepo, Result};
use trellis_kernel::{SessionFamilyId, TenantCtx, Timestamp, UserId};

#[async_trait]
impl RefreshTokenRepo for PgStore {
    async fn insert(&self, ctx: &TenantCtx, token: RefreshToken) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(token.id.as_uuid()),
                    family_id: Set(token.family_id.as_uuid()),
                    user_id: Set(token.user_id.as_uuid()),
                    membership_id: Set(token.membership_id.map(|m| m.as_uuid())),
                    token_hash: Set(token.token_hash),
                    expires_at: Set(token.expires_at),
                    used_at: Set(token.used_at),
                    revoked_at: Set(token.revoked_at),
                    created_at: Set(token.created_at),
                }
                .insert(txn)
                .await
                .map_err(E::db("insert refresh token"))?;
                Ok(())
            })
        })
        .await
    }

    async fn find_by_hash(
        &self,
        ctx: &TenantCtx,
        token_hash: &str,
    ) -> Result<Option<RefreshToken>> {
        let tenant = ctx.tenant_id();
        let token_hash = token_hash.to_owned();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = Entity::find()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::TokenHash.eq(token_hash))
                    .one(txn)
                    .await
                    .map_err(E::db("find refresh token"))?;
                Ok(row.map(mapper::refresh_token))
            })
        })
        .await
    }

    async fn mark_used(&self, ctx: &TenantCtx, token_hash: &str, at: Timestamp) -> Result<bool> {
        let tenant = ctx.tenant_id();
        let token_hash = token_hash.to_owned();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                // Compare-and-set: the row lock taken by UPDATE makes a concurrent
                // second attempt re-check `used_at IS NULL` after the first commits,
                // so it updates nothing and reports the replay.
                let done = Entity::update_many()
                    .col_expr(Column::UsedAt, Expr::value(at))
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::TokenHash.eq(token_hash))
                    .filter(Column::UsedAt.is_null())
                    .exec(txn)
                    .await
                    .map_err(E::db("mark refresh token used"))?;
                Ok(done.rows_affected == 1)
            })
        })
        .await
    }

    async fn revoke_family(
        &self,
        ctx: &TenantCtx,
        family: SessionFamilyId,
        at: Timestamp,
    ) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                Entity::update_many()
                    .col_expr(Column::RevokedAt, Expr::value(at))
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::FamilyId.eq(family.as_uuid()))
                    .filter(Column::RevokedAt.is_null())
                    .exec(txn)
                    .await
                    .map_err(E::db("revoke refresh token family"))?;
                Ok(())
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
                    .filter(Column::UserId.eq(user.as_uuid()))
                    .filter(Column::RevokedAt.is_null())
                    .exec(txn)
                    .await
                    .map_err(E::db("revoke the user's refresh tokens"))?;
                Ok(())
            })
        })
        .await
    }
}
