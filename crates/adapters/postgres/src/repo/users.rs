//! `UserRepo` on Postgres. Soft-deleted users are filtered out of every query, so they
//! are invisible to every method, as the port requires.

use crate::entity::user::{ActiveModel, Column, Entity, Model};
use crate::error::DomainError as _;
use crate::jsonb::Jsonb;
use crate::mapper;
use crate::store::{PgStore, by_position, finish_page, keyset, select_columns};
use crate::txn::Txn;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::sqlx::Row as _;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, PaginatorTrait as _,
    QueryFilter as _, Select, Set,
};
use trellis_identity::{
    IdentityError as E, LoginRecord, NewUser, Preferences, Result, User, UserFilter, UserPatch,
    UserRepo,
};
use trellis_kernel::{
    Email, Page, PageRequest, PasswordHash, TenantCtx, TenantId, Timestamp, UserId,
};

use super::kept_sql::{Bound, KeptSql};
use super::to_json;

/// Live users of one tenant.
fn live(tenant: TenantId) -> Select<Entity> {
    Entity::find()
        .filter(Column::TenantId.eq(tenant.as_uuid()))
        .filter(Column::DeletedAt.is_null())
}

/// The columns of a `User`, in the order [`read_users`] reads them. Not the password
/// hash: only login needs it, and a page of users should not carry every user's hash
/// through the server. Not `deleted_at`: these queries read live rows only.
const USER_COLUMNS: [Column; 16] = [
    Column::TenantId,
    Column::Id,
    Column::Email,
    Column::EmailVerified,
    Column::Name,
    Column::Username,
    Column::AvatarUrl,
    Column::Role,
    Column::Tier,
    Column::OauthProvider,
    Column::OauthSubject,
    Column::Preferences,
    Column::Active,
    Column::LastLoginAt,
    Column::CreatedAt,
    Column::UpdatedAt,
];

/// Runs a query of users as a read of its own of [`USER_COLUMNS`]
/// (`PgStore::read_by_position`), each row with its preferences decoded apart
/// ([`mapper::user_with`]).
///
/// By position, because SeaORM's derived `FromQueryResult` looks every column up by
/// name and formats an error message for every NULL it meets (most optional user fields
/// are NULL): on a page of twenty users that was a seventh of the list endpoint's CPU.
async fn read_users(
    store: &PgStore,
    ctx: &TenantCtx,
    select: Select<Entity>,
    what: &'static str,
) -> Result<Vec<(Model, Preferences)>> {
    read_users_by(store, ctx, select_columns(select, &USER_COLUMNS), what).await
}

/// [`read_users`] of a statement that selects [`USER_COLUMNS`].
async fn read_users_by(
    store: &PgStore,
    ctx: &TenantCtx,
    stmt: sea_orm::Statement,
    what: &'static str,
) -> Result<Vec<(Model, Preferences)>> {
    store
        .read_by_position(
            ctx,
            stmt,
            &USER_COLUMNS,
            // Without the password hash and `deleted_at`, which it does not select.
            by_position!(|row| {
                let preferences: Jsonb<Preferences> = row.try_get(11)?;
                let model = Model {
                    tenant_id: row.try_get(0)?,
                    id: row.try_get(1)?,
                    email: row.try_get(2)?,
                    email_verified: row.try_get(3)?,
                    password_hash: None,
                    name: row.try_get(4)?,
                    username: row.try_get(5)?,
                    avatar_url: row.try_get(6)?,
                    role: row.try_get(7)?,
                    tier: row.try_get(8)?,
                    oauth_provider: row.try_get(9)?,
                    oauth_subject: row.try_get(10)?,
                    // Decoded above, into its type.
                    preferences: serde_json::Value::Null,
                    active: row.try_get(12)?,
                    last_login_at: row.try_get(13)?,
                    created_at: row.try_get(14)?,
                    updated_at: row.try_get(15)?,
                    deleted_at: None,
                };
                (model, preferences.0)
            }),
            what,
        )
        .await
}

/// A user read by [`read_users`].
fn user_read((row, preferences): (Model, Preferences)) -> anyhow::Result<User> {
    mapper::user_with(row, preferences)
}

/// The list's query of live users, as sea-query builds it: filtered by the given
/// role and active flag, after the cursor, one more than the limit.
fn list_select(tenant: TenantId, filter: &UserFilter, page: PageRequest) -> sea_orm::Statement {
    let mut select = live(tenant);
    if let Some(role) = filter.role {
        select = select.filter(Column::Role.eq(role.as_str()));
    }
    if let Some(active) = filter.active {
        select = select.filter(Column::Active.eq(active));
    }
    select_columns(keyset(select, Column::Id, page), &USER_COLUMNS)
}

/// The list's SQL for each shape of request: a role filter or not, an active filter or
/// not, a cursor or not.
static LIST_SQL: KeptSql<8> = KeptSql::new();

/// [`list_select`]'s statement, with the SQL rendered once per shape.
fn list_statement(tenant: TenantId, filter: &UserFilter, page: PageRequest) -> sea_orm::Statement {
    let bound = Bound::tenant(tenant.as_uuid())
        .optional(filter.role.map(|role| role.as_str()))
        .optional(filter.active)
        .page(page);
    LIST_SQL.statement(bound, || list_select(tenant, filter, page))
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
        let select = live(ctx.tenant_id()).filter(Column::Id.eq(id.as_uuid()));
        let row = read_users(self, ctx, select, "load user")
            .await?
            .pop()
            .ok_or(E::NotFound("user"))?;
        Ok(user_read(row)?)
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
        let stmt = list_statement(ctx.tenant_id(), filter, page);
        let rows = read_users_by(self, ctx, stmt, "list users").await?;
        Ok(finish_page(page, rows, |(r, _)| r.id, user_read)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::kept_sql::tests::pages;
    use trellis_kernel::Role;

    #[test]
    fn the_lists_statement_is_the_one_sea_query_builds_for_every_shape_and_value() {
        // Each shape twice with other values: the second is served from the kept SQL.
        for (tenant, role) in [(1_u128, Role::Support), (2, Role::TenantAdmin)] {
            let tenant = TenantId::from_uuid(uuid::Uuid::from_u128(tenant));
            for shape in 0..8_u8 {
                let filter = UserFilter {
                    role: (shape & 1 != 0).then_some(role),
                    active: (shape & 2 != 0).then_some(tenant.as_uuid().as_u128() == 2),
                };
                for page in pages(shape & 4 != 0) {
                    let kept = list_statement(tenant, &filter, page);
                    let built = list_select(tenant, &filter, page);
                    assert_eq!(kept.sql, built.sql, "shape {shape}");
                    assert_eq!(kept.values, built.values, "shape {shape}");
                }
            }
        }
    }
}
