//! `LlmCatalog` on Postgres: the platform-wide `llm_models` table, narrowed to the
//! providers the tenant's configuration allows (`tenants.config`, read in the same
//! tenant-scoped transaction). The catalogue itself is written in platform mode only
//! ([`PgStore::put_llm_model`]); row-level security refuses tenant-scoped writes.

use super::content_common::db;
use crate::content_mapper;
use crate::entity::{llm_model, tenant};
use crate::mapper;
use crate::store::PgStore;
use crate::txn::Txn;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{EntityTrait as _, NotSet, QueryOrder as _, Set};
use trellis_content::{ContentError, LlmCatalog, LlmModel, Result};
use trellis_kernel::{PlatformCtx, TenantCtx, TenantId};
use trellis_tenancy::{LlmProvider, TenantConfig};

/// The tenant's configuration; `None` when the tenant row is gone, in which case no
/// model is available.
async fn tenant_config(txn: &Txn, id: TenantId) -> Result<Option<TenantConfig>> {
    let row = tenant::Entity::find_by_id(id.as_uuid())
        .one(txn)
        .await
        .map_err(db("load tenant"))?;
    Ok(row.map(mapper::tenant).transpose()?.map(|t| t.config))
}

pub(crate) fn unavailable(provider: LlmProvider, model: &str) -> ContentError {
    ContentError::ModelUnavailable(format!("{}/{model}", provider.as_str()))
}

#[async_trait]
impl LlmCatalog for PgStore {
    async fn list(&self, ctx: &TenantCtx) -> Result<Vec<LlmModel>> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let Some(config) = tenant_config(txn, tenant).await? else {
                    return Ok(Vec::new());
                };
                let rows = llm_model::Entity::find()
                    .order_by_asc(llm_model::Column::Provider)
                    .order_by_asc(llm_model::Column::Name)
                    .all(txn)
                    .await
                    .map_err(db("list models"))?;
                let mut models = Vec::with_capacity(rows.len());
                for row in rows {
                    let model = content_mapper::llm_model(row)?;
                    if config.allows(model.provider) {
                        models.push(model);
                    }
                }
                Ok(models)
            })
        })
        .await
    }

    async fn get(&self, ctx: &TenantCtx, provider: LlmProvider, model: &str) -> Result<LlmModel> {
        let tenant = ctx.tenant_id();
        let model = model.to_owned();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let allowed = tenant_config(txn, tenant)
                    .await?
                    .is_some_and(|c| c.allows(provider));
                if !allowed {
                    return Err(unavailable(provider, &model));
                }
                let row =
                    llm_model::Entity::find_by_id((provider.as_str().to_owned(), model.clone()))
                        .one(txn)
                        .await
                        .map_err(db("load model"))?
                        .ok_or_else(|| unavailable(provider, &model))?;
                Ok(content_mapper::llm_model(row)?)
            })
        })
        .await
    }
}

impl PgStore {
    /// Adds a model to the catalogue, or replaces its context window, streaming flag
    /// and prices. Platform work (`cargo xtask seed` and platform admins).
    ///
    /// # Errors
    /// `Invalid` for a model that fails the domain's validation; `Unexpected` for a
    /// price beyond `i64::MAX` micro-dollars or a storage failure.
    pub async fn put_llm_model(&self, ctx: &PlatformCtx, model: LlmModel) -> Result<LlmModel> {
        model.validate()?;
        let int = |v: u64, what: &str| -> Result<i64> {
            i64::try_from(v).map_err(|_| anyhow::anyhow!("{what} is out of range").into())
        };
        let row = llm_model::ActiveModel {
            provider: Set(model.provider.as_str().to_owned()),
            name: Set(model.name.clone()),
            context_window: Set(i32::try_from(model.context_window)
                .map_err(|_| anyhow::anyhow!("the context window is out of range"))?),
            supports_streaming: Set(model.supports_streaming),
            input_micro_usd_per_1k: Set(int(model.input_price_per_1k.as_micros(), "input price")?),
            output_micro_usd_per_1k: Set(int(
                model.output_price_per_1k.as_micros(),
                "output price",
            )?),
            created_at: NotSet,
            updated_at: NotSet,
        };
        self.in_platform(ctx, move |txn| {
            Box::pin(async move {
                let saved = llm_model::Entity::insert(row)
                    .on_conflict(
                        OnConflict::columns([llm_model::Column::Provider, llm_model::Column::Name])
                            .update_columns([
                                llm_model::Column::ContextWindow,
                                llm_model::Column::SupportsStreaming,
                                llm_model::Column::InputMicroUsdPer1k,
                                llm_model::Column::OutputMicroUsdPer1k,
                            ])
                            .value(llm_model::Column::UpdatedAt, Expr::current_timestamp())
                            .to_owned(),
                    )
                    .exec_with_returning(txn)
                    .await
                    .map_err(db("save model"))?;
                Ok(content_mapper::llm_model(saved)?)
            })
        })
        .await
    }
}
