//! `TenantRepo` on Postgres. Platform operations run in platform mode; a tenant's own
//! settings run scoped to that tenant, where the policy shows it only its own row.

use crate::entity::{tenant, tenant_llm_config, tenant_widget_config, user};
use crate::error::DomainError as _;
use crate::mapper;
use crate::store::{PgStore, finish_page, keyset};
use crate::txn::Txn;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::NotSet, ColumnTrait as _, EntityTrait as _,
    QueryFilter as _, Set,
};
use trellis_kernel::{Page, PageRequest, PlatformCtx, Role, Slug, TenantCtx, TenantId};
use trellis_tenancy::{
    FirstAdmin, LlmConfig, NewTenant, Result, TenancyError as E, Tenant, TenantPatch, TenantRef,
    TenantRepo, TenantStatus, WidgetConfig,
};

use super::to_json;

/// The live (not soft-deleted) tenant with this id, if visible in the transaction.
async fn find_live(txn: &Txn, id: TenantId) -> Result<Option<tenant::Model>> {
    tenant::Entity::find_by_id(id.as_uuid())
        .filter(tenant::Column::DeletedAt.is_null())
        .one(txn)
        .await
        .map_err(E::db("load tenant"))
}

#[async_trait]
impl TenantRepo for PgStore {
    async fn create(&self, ctx: &PlatformCtx, new: NewTenant, admin: FirstAdmin) -> Result<Tenant> {
        // Platform mode admits the new tenant row; scoping to the new tenant admits its
        // first admin under the users policy. Both commit or neither does.
        self.in_platform_and_tenant(ctx, new.id, move |txn| {
            Box::pin(async move {
                let row = tenant::ActiveModel {
                    id: Set(new.id.as_uuid()),
                    name: Set(new.name),
                    slug: Set(new.slug.as_str().to_owned()),
                    subdomain: Set(new.subdomain.as_str().to_owned()),
                    custom_domain: Set(new.custom_domain.map(|d| d.as_str().to_owned())),
                    branding: Set(to_json(&new.branding, "branding")?),
                    config: Set(to_json(&new.config, "tenant config")?),
                    plan: Set(new.plan.as_str().to_owned()),
                    status: Set(TenantStatus::Active.as_str().to_owned()),
                    billing_customer_id: Set(None),
                    created_at: NotSet,
                    updated_at: NotSet,
                    deleted_at: Set(None),
                }
                .insert(txn)
                .await
                .map_err(E::db("insert tenant"))?;
                user::ActiveModel {
                    tenant_id: Set(new.id.as_uuid()),
                    id: Set(admin.id.as_uuid()),
                    email: Set(admin.email.as_str().to_owned()),
                    email_verified: Set(false),
                    password_hash: Set(Some(admin.password_hash.as_str().to_owned())),
                    name: Set(admin.name),
                    role: Set(Role::TenantAdmin.as_str().to_owned()),
                    preferences: Set(serde_json::json!({})),
                    active: Set(true),
                    ..Default::default()
                }
                .insert(txn)
                .await
                .map_err(E::db("insert the tenant's first admin"))?;
                Ok(mapper::tenant(row)?)
            })
        })
        .await
    }

    async fn list(&self, ctx: &PlatformCtx, page: PageRequest) -> Result<Page<Tenant>> {
        self.in_platform(ctx, move |txn| {
            Box::pin(async move {
                let select = tenant::Entity::find().filter(tenant::Column::DeletedAt.is_null());
                let rows = keyset(select, tenant::Column::Id, page)
                    .all(txn)
                    .await
                    .map_err(E::db("list tenants"))?;
                Ok(finish_page(page, rows, |r| r.id, mapper::tenant)?)
            })
        })
        .await
    }

    async fn get(&self, ctx: &PlatformCtx, id: TenantId) -> Result<Tenant> {
        self.in_platform(ctx, move |txn| {
            Box::pin(async move {
                let row = find_live(txn, id).await?.ok_or(E::NotFound)?;
                Ok(mapper::tenant(row)?)
            })
        })
        .await
    }

    async fn set_status(
        &self,
        ctx: &PlatformCtx,
        id: TenantId,
        status: TenantStatus,
    ) -> Result<Tenant> {
        self.in_platform(ctx, move |txn| {
            Box::pin(async move {
                let row = tenant::Entity::update_many()
                    .col_expr(tenant::Column::Status, Expr::value(status.as_str()))
                    .col_expr(tenant::Column::UpdatedAt, Expr::current_timestamp())
                    .filter(tenant::Column::Id.eq(id.as_uuid()))
                    .filter(tenant::Column::DeletedAt.is_null())
                    .exec_with_returning(txn)
                    .await
                    .map_err(E::db("set tenant status"))?
                    .into_iter()
                    .next()
                    .ok_or(E::NotFound)?;
                Ok(mapper::tenant(row)?)
            })
        })
        .await
    }

    async fn soft_delete(&self, ctx: &PlatformCtx, id: TenantId) -> Result<()> {
        self.in_platform(ctx, move |txn| {
            Box::pin(async move {
                let done = tenant::Entity::update_many()
                    .col_expr(tenant::Column::DeletedAt, Expr::current_timestamp())
                    .col_expr(tenant::Column::UpdatedAt, Expr::current_timestamp())
                    .filter(tenant::Column::Id.eq(id.as_uuid()))
                    .filter(tenant::Column::DeletedAt.is_null())
                    .exec(txn)
                    .await
                    .map_err(E::db("delete tenant"))?;
                if done.rows_affected == 0 {
                    return Err(E::NotFound);
                }
                Ok(())
            })
        })
        .await
    }

    async fn resolve_slug(&self, ctx: &PlatformCtx, slug: &Slug) -> Result<Option<TenantRef>> {
        let slug = slug.as_str().to_owned();
        self.in_platform(ctx, move |txn| {
            Box::pin(async move {
                let row = tenant::Entity::find()
                    .filter(tenant::Column::Slug.eq(slug))
                    .filter(tenant::Column::DeletedAt.is_null())
                    .one(txn)
                    .await
                    .map_err(E::db("resolve tenant slug"))?;
                // Mapping the whole row validates it, as every other read does.
                let tenant = row.map(mapper::tenant).transpose()?;
                Ok(tenant.map(|t| TenantRef {
                    id: t.id,
                    status: t.status,
                }))
            })
        })
        .await
    }

    async fn current(&self, ctx: &TenantCtx) -> Result<Tenant> {
        let id = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = find_live(txn, id).await?.ok_or(E::NotFound)?;
                Ok(mapper::tenant(row)?)
            })
        })
        .await
    }

    async fn update(&self, ctx: &TenantCtx, patch: TenantPatch) -> Result<Tenant> {
        let id = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let mut update = tenant::Entity::update_many()
                    .col_expr(tenant::Column::UpdatedAt, Expr::current_timestamp());
                if let Some(name) = patch.name {
                    update = update.col_expr(tenant::Column::Name, Expr::value(name));
                }
                if let Some(domain) = patch.custom_domain {
                    let domain = domain.map(|d| d.as_str().to_owned());
                    update = update.col_expr(tenant::Column::CustomDomain, Expr::value(domain));
                }
                if let Some(branding) = patch.branding {
                    let branding = to_json(&branding, "branding")?;
                    update = update.col_expr(tenant::Column::Branding, Expr::value(branding));
                }
                if let Some(config) = patch.config {
                    let config = to_json(&config, "tenant config")?;
                    update = update.col_expr(tenant::Column::Config, Expr::value(config));
                }
                let row = update
                    .filter(tenant::Column::Id.eq(id.as_uuid()))
                    .filter(tenant::Column::DeletedAt.is_null())
                    .exec_with_returning(txn)
                    .await
                    .map_err(E::db("update tenant"))?
                    .into_iter()
                    .next()
                    .ok_or(E::NotFound)?;
                Ok(mapper::tenant(row)?)
            })
        })
        .await
    }

    async fn widget(&self, ctx: &TenantCtx) -> Result<Option<WidgetConfig>> {
        let id = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = tenant_widget_config::Entity::find_by_id(id.as_uuid())
                    .filter(tenant_widget_config::Column::TenantId.eq(id.as_uuid()))
                    .one(txn)
                    .await
                    .map_err(E::db("load widget config"))?;
                Ok(row.map(mapper::widget).transpose()?)
            })
        })
        .await
    }

    async fn put_widget(&self, ctx: &TenantCtx, widget: WidgetConfig) -> Result<WidgetConfig> {
        use tenant_widget_config::{ActiveModel, Column, Entity};
        let id = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let row = ActiveModel {
                    tenant_id: Set(id.as_uuid()),
                    primary_color: Set(widget.primary_color.as_str().to_owned()),
                    welcome_message: Set(widget.welcome_message),
                    position: Set(widget.position.as_str().to_owned()),
                    enabled: Set(widget.enabled),
                    allowed_origins: Set(to_json(&widget.allowed_origins, "allowed origins")?),
                    updated_at: NotSet,
                };
                let saved = Entity::insert(row)
                    .on_conflict(
                        OnConflict::column(Column::TenantId)
                            .update_columns([
                                Column::PrimaryColor,
                                Column::WelcomeMessage,
                                Column::Position,
                                Column::Enabled,
                                Column::AllowedOrigins,
                            ])
                            .value(Column::UpdatedAt, Expr::current_timestamp())
                            .to_owned(),
                    )
                    .exec_with_returning(txn)
                    .await
                    .map_err(E::db("save widget config"))?;
                Ok(mapper::widget(saved)?)
            })
        })
        .await
    }

    async fn llm(&self, ctx: &TenantCtx) -> Result<Option<LlmConfig>> {
        let id = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = tenant_llm_config::Entity::find_by_id(id.as_uuid())
                    .filter(tenant_llm_config::Column::TenantId.eq(id.as_uuid()))
                    .one(txn)
                    .await
                    .map_err(E::db("load LLM config"))?;
                Ok(row.map(mapper::llm).transpose()?)
            })
        })
        .await
    }

    async fn put_llm(&self, ctx: &TenantCtx, llm: LlmConfig) -> Result<LlmConfig> {
        use tenant_llm_config::{ActiveModel, Column, Entity};
        let id = ctx.tenant_id();
        let max_tokens = i32::try_from(llm.max_tokens).map_err(|_| {
            trellis_kernel::InvalidValue::new("max_tokens", "must be at most 2147483647")
        })?;
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let (key_id, ciphertext) = match llm.api_key {
                    Some(sealed) => (Some(sealed.key_id), Some(sealed.ciphertext)),
                    None => (None, None),
                };
                let row = ActiveModel {
                    tenant_id: Set(id.as_uuid()),
                    provider: Set(llm.provider.as_str().to_owned()),
                    model: Set(llm.model),
                    temperature: Set(llm.temperature),
                    max_tokens: Set(max_tokens),
                    api_key_ciphertext: Set(ciphertext),
                    api_key_key_id: Set(key_id),
                    api_key_hint: Set(llm.api_key_hint),
                    base_url: Set(llm.base_url.map(|u| u.as_str().to_owned())),
                    updated_at: Set(llm.updated_at),
                };
                let saved = Entity::insert(row)
                    .on_conflict(
                        OnConflict::column(Column::TenantId)
                            .update_columns([
                                Column::Provider,
                                Column::Model,
                                Column::Temperature,
                                Column::MaxTokens,
                                Column::ApiKeyCiphertext,
                                Column::ApiKeyKeyId,
                                Column::ApiKeyHint,
                                Column::BaseUrl,
                                Column::UpdatedAt,
                            ])
                            .to_owned(),
                    )
                    .exec_with_returning(txn)
                    .await
                    .map_err(E::db("save LLM config"))?;
                Ok(mapper::llm(saved)?)
            })
        })
        .await
    }
}
