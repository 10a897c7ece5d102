//! `MembershipRepo` on Postgres: guest memberships, stored in the host tenant.

use crate::entity::membership::{ActiveModel, Column, Entity};
use crate::error::DomainError as _;
use crate::mapper;
use crate::store::{PgStore, finish_page, keyset};
use async_trait::async_trait;
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use trellis_identity::{IdentityError as E, Membership, MembershipRepo, Result};
use trellis_kernel::{Email, MembershipId, Page, PageRequest, TenantCtx};

#[async_trait]
impl MembershipRepo for PgStore {
    async fn insert(&self, ctx: &TenantCtx, membership: Membership) -> Result<Membership> {
        // The row always lands in the caller's tenant, whatever `membership.tenant_id`
        // says: the context, not the payload, decides where data goes.
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let row = ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(membership.id.as_uuid()),
                    home_tenant_id: Set(membership.home_tenant_id.as_uuid()),
                    user_id: Set(membership.user_id.as_uuid()),
                    email: Set(membership.email.as_str().to_owned()),
                    role: Set(membership.role.as_str().to_owned()),
                    created_at: Set(membership.created_at),
                }
                .insert(txn)
                .await
                .map_err(E::db("insert guest membership"))?;
                Ok(mapper::membership(row)?)
            })
        })
        .await
    }

    async fn find_by_email(&self, ctx: &TenantCtx, email: &Email) -> Result<Option<Membership>> {
        let tenant = ctx.tenant_id();
        let email = email.as_str().to_owned();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = Entity::find()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Email.eq(email))
                    .one(txn)
                    .await
                    .map_err(E::db("find guest by email"))?;
                Ok(row.map(mapper::membership).transpose()?)
            })
        })
        .await
    }

    async fn get(&self, ctx: &TenantCtx, id: MembershipId) -> Result<Membership> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = Entity::find_by_id((tenant.as_uuid(), id.as_uuid()))
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .one(txn)
                    .await
                    .map_err(E::db("load guest membership"))?
                    .ok_or(E::NotFound("guest"))?;
                Ok(mapper::membership(row)?)
            })
        })
        .await
    }

    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<Membership>> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let select = Entity::find().filter(Column::TenantId.eq(tenant.as_uuid()));
                let rows = keyset(select, Column::Id, page)
                    .all(txn)
                    .await
                    .map_err(E::db("list guest memberships"))?;
                Ok(finish_page(page, rows, |r| r.id, mapper::membership)?)
            })
        })
        .await
    }

    async fn delete(&self, ctx: &TenantCtx, id: MembershipId) -> Result<()> {
        let tenant = ctx.tenant_id();
        // The guest's refresh tokens go with it (ON DELETE CASCADE).
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let done = Entity::delete_many()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await
                    .map_err(E::db("delete guest membership"))?;
                if done.rows_affected == 0 {
                    return Err(E::NotFound("guest"));
                }
                Ok(())
            })
        })
        .await
    }
}
