//! `UserRepo` on Postgres. Soft-deleted users are filtered out of every query, so they
//! are invisible to every method, as the port requires.

use crate::entity::user::{ActiveModel, Column, Entity, Model};
use crate::error::DomainError as _;
use crate::mapper;
use crate::store::{PgStore, finish_page, keyset};
use crate::txn::Txn;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, PaginatorTrait as _,
    QueryFilter as _, Select, Set,
};
use trellis_identity::{
    IdentityError as E, LoginRecord, NewUser, Result, User, UserFilter, UserPatch, UserRepo,
};
use trellis_kernel::{
    Email, Page, PageRequest, PasswordHash, TenantCtx, TenantId, Timestamp, UserId,
};

use super::to_json;

/// Live users of one tenant.
fn live(tenant: TenantId) -> Select<Entity> {
    Entity::find()
        .filter(Column::TenantId.eq(tenant.as_uuid()))
        .filter(Column::DeletedAt.is_null())
}

/// Sets `values` on one live user; `NotFound` when there is none in this tenant.
async fn update_live(
    txn: &Txn,
    tenant: TenantId,
    id: UserId,
    values: Vec<(Column, SimpleExpr)>,
    what: &'static str,
) -> Result<Model> {
    let mut update = Entity::update_many().col_expr(Column::UpdatedAt, Expr::current_timestamp());
    for (col, value) in values {
        update = update.col_expr(col, value);
    }
    update
        .filter(Column::TenantId.eq(tenant.as_uuid()))
        .filter(Column::Id.eq(id.as_uuid()))
        .filter(Column::DeletedAt.is_null())
        .exec_with_returning(txn)
        .await
        .map_err(E::db(what))?
        .into_iter()
        .next()
        .ok_or(E::NotFound("user"))
}

#[async_trait]
impl UserRepo for PgStore {
    async fn insert(&self, ctx: &TenantCtx, new: NewUser) -> Result<User> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let (oauth_provider, oauth_subject) = match new.oauth {
                    Some(link) => (Some(link.provider), Some(link.subject)),
                    None => (None, None),
                };
                let row = ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(new.id.as_uuid()),
                    email: Set(new.email.as_str().to_owned()),
                    email_verified: Set(new.email_verified),
                    password_hash: Set(new.password_hash.map(|h| h.as_str().to_owned())),
                    name: Set(new.name),
                    username: Set(new.username.map(|u| u.as_str().to_owned())),
                    avatar_url: Set(new.avatar_url.map(|u| u.as_str().to_owned())),
                    role: Set(new.role.as_str().to_owned()),
                    tier: Set(new.tier.as_str().to_owned()),
                    oauth_provider: Set(oauth_provider),
                    oauth_subject: Set(oauth_subject),
                    preferences: Set(to_json(&new.preferences, "preferences")?),
                    active: Set(true),
                    ..Default::default()
                }
                .insert(txn)
                .await
                .map_err(E::db("insert user"))?;
                Ok(mapper::user(row)?)
            })
        })
        .await
    }

    async fn get(&self, ctx: &TenantCtx, id: UserId) -> Result<User> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = live(tenant)
                    .filter(Column::Id.eq(id.as_uuid()))
                    .one(txn)
                    .await
                    .map_err(E::db("load user"))?
                    .ok_or(E::NotFound("user"))?;
                Ok(mapper::user(row)?)
            })
        })
        .await
    }

    async fn find_for_login(&self, ctx: &TenantCtx, email: &Email) -> Result<Option<LoginRecord>> {
        let tenant = ctx.tenant_id();
        let email = email.as_str().to_owned();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = live(tenant)
                    .filter(Column::Email.eq(email))
                    .one(txn)
                    .await
                    .map_err(E::db("find user by email"))?;
                Ok(row.map(mapper::login_record).transpose()?)
            })
        })
        .await
    }

    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &UserFilter,
        page: PageRequest,
    ) -> Result<Page<User>> {
        let tenant = ctx.tenant_id();
        let filter = filter.clone();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let mut select = live(tenant);
                if let Some(role) = filter.role {
                    select = select.filter(Column::Role.eq(role.as_str()));
                }
                if let Some(active) = filter.active {
                    select = select.filter(Column::Active.eq(active));
                }
                let rows = keyset(select, Column::Id, page)
                    .all(txn)
                    .await
                    .map_err(E::db("list users"))?;
                Ok(finish_page(page, rows, |r| r.id, mapper::user)?)
            })
        })
        .await
    }

    async fn update(&self, ctx: &TenantCtx, id: UserId, patch: UserPatch) -> Result<User> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let mut values: Vec<(Column, SimpleExpr)> = Vec::new();
                if let Some(name) = patch.name {
                    values.push((Column::Name, Expr::value(name)));
                }
                if let Some(username) = patch.username {
                    let username = username.map(|u| u.as_str().to_owned());
                    values.push((Column::Username, Expr::value(username)));
                }
                if let Some(avatar) = patch.avatar_url {
                    let avatar = avatar.map(|u| u.as_str().to_owned());
                    values.push((Column::AvatarUrl, Expr::value(avatar)));
                }
                if let Some(role) = patch.role {
                    values.push((Column::Role, Expr::value(role.as_str())));
                }
                if let Some(tier) = patch.tier {
                    values.push((Column::Tier, Expr::value(tier.as_str())));
                }
                if let Some(active) = patch.active {
                    values.push((Column::Active, Expr::value(active)));
                }
                if let Some(preferences) = patch.preferences {
                    let preferences = to_json(&preferences, "preferences")?;
                    values.push((Column::Preferences, Expr::value(preferences)));
                }
                if let Some(verified) = patch.email_verified {
                    values.push((Column::EmailVerified, Expr::value(verified)));
                }
                let row = update_live(txn, tenant, id, values, "update user").await?;
                Ok(mapper::user(row)?)
            })
        })
        .await
    }

    async fn set_password(&self, ctx: &TenantCtx, id: UserId, hash: PasswordHash) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let hash = Some(hash.as_str().to_owned());
                let values = vec![(Column::PasswordHash, Expr::value(hash))];
                update_live(txn, tenant, id, values, "set password").await?;
                Ok(())
            })
        })
        .await
    }

    async fn soft_delete(&self, ctx: &TenantCtx, id: UserId, at: Timestamp) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let values = vec![(Column::DeletedAt, Expr::value(at))];
                update_live(txn, tenant, id, values, "delete user").await?;
                Ok(())
            })
        })
        .await
    }

    async fn record_login(&self, ctx: &TenantCtx, id: UserId, at: Timestamp) -> Result<()> {
        let tenant = ctx.tenant_id();
        // The port lists no errors: a user deleted since the password check simply has
        // nothing to record (the in-memory adapter behaves the same).
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                Entity::update_many()
                    .col_expr(Column::LastLoginAt, Expr::value(at))
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .filter(Column::DeletedAt.is_null())
                    .exec(txn)
                    .await
                    .map_err(E::db("record login"))?;
                Ok(())
            })
        })
        .await
    }

    async fn count(&self, ctx: &TenantCtx) -> Result<u64> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move { live(tenant).count(txn).await.map_err(E::db("count users")) })
        })
        .await
    }
}
