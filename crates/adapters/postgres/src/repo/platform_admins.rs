//! `PlatformAdminRepo` on Postgres; only platform-mode transactions can see the table.

use crate::entity::platform_admin::{ActiveModel, Column, Entity};
use crate::error::DomainError as _;
use crate::mapper;
use crate::store::PgStore;
use async_trait::async_trait;
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use trellis_identity::{
    IdentityError as E, NewPlatformAdmin, PlatformAdmin, PlatformAdminRepo, Result,
};
use trellis_kernel::{Email, PasswordHash, PlatformCtx};

#[async_trait]
impl PlatformAdminRepo for PgStore {
    async fn insert(&self, ctx: &PlatformCtx, new: NewPlatformAdmin) -> Result<PlatformAdmin> {
        self.in_platform(ctx, move |txn| {
            Box::pin(async move {
                let row = ActiveModel {
                    id: Set(new.id.as_uuid()),
                    email: Set(new.email.as_str().to_owned()),
                    name: Set(new.name),
                    password_hash: Set(new.password_hash.as_str().to_owned()),
                    active: Set(true),
                    ..Default::default()
                }
                .insert(txn)
                .await
                .map_err(E::db("insert platform admin"))?;
                Ok(mapper::platform_admin(row)?.0)
            })
        })
        .await
    }

    async fn find_for_login(
        &self,
        ctx: &PlatformCtx,
        email: &Email,
    ) -> Result<Option<(PlatformAdmin, PasswordHash)>> {
        let email = email.as_str().to_owned();
        self.in_platform(ctx, move |txn| {
            Box::pin(async move {
                let row = Entity::find()
                    .filter(Column::Email.eq(email))
                    .one(txn)
                    .await
                    .map_err(E::db("find platform admin by email"))?;
                Ok(row.map(mapper::platform_admin).transpose()?)
            })
        })
        .await
    }
}
