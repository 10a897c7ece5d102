//! `MemoryRepo` on Postgres. Keys are unique per user (`memories_tenant_id_owner_id_key_key`
//! makes a taken key a `Conflict`); search ranks the generated `tsv` column (key,
//! value and category, weighted in that order) against the query's words, ORed.

use super::content_common::db;
use crate::content_mapper;
use crate::entity::memory::{ActiveModel, Column, Entity, MemoryHit, RANK};
use crate::store::{PgStore, finish_page, keyset};
use anyhow::Context as _;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, Order, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Set,
};
use trellis_content::{
    ContentError, Memory, MemoryId, MemoryPatch, MemoryRepo, NewMemory, Result, ScoredMemory,
};
use trellis_kernel::search::any_word_query;
use trellis_kernel::{Page, PageRequest, TenantCtx, UserId};

#[async_trait]
impl MemoryRepo for PgStore {
    async fn insert(&self, ctx: &TenantCtx, new: NewMemory) -> Result<Memory> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let row = ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(new.id.as_uuid()),
                    owner_id: Set(new.owner_id.as_uuid()),
                    key: Set(new.key),
                    value: Set(new.value),
                    category: Set(new.category),
                    source: Set(new.source.as_str().to_owned()),
                    source_id: Set(new.source_id),
                    ..Default::default()
                }
                .insert(txn)
                .await
                .map_err(db("insert memory"))?;
                Ok(content_mapper::memory(row)?)
            })
        })
        .await
    }

    async fn get(&self, ctx: &TenantCtx, id: MemoryId) -> Result<Memory> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = Entity::find_by_id((tenant.as_uuid(), id.as_uuid()))
                    .one(txn)
                    .await
                    .map_err(db("load memory"))?
                    .ok_or(ContentError::NotFound("memory"))?;
                Ok(content_mapper::memory(row)?)
            })
        })
        .await
    }

    async fn list(
        &self,
        ctx: &TenantCtx,
        owner: UserId,
        page: PageRequest,
    ) -> Result<Page<Memory>> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let select = Entity::find()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::OwnerId.eq(owner.as_uuid()));
                let rows = keyset(select, Column::Id, page)
                    .all(txn)
                    .await
                    .map_err(db("list memories"))?;
                Ok(finish_page(page, rows, |r| r.id, content_mapper::memory)?)
            })
        })
        .await
    }

    async fn update(&self, ctx: &TenantCtx, id: MemoryId, patch: MemoryPatch) -> Result<Memory> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let mut values: Vec<(Column, SimpleExpr)> = Vec::new();
                if let Some(key) = patch.key {
                    values.push((Column::Key, Expr::value(key)));
                }
                if let Some(value) = patch.value {
                    values.push((Column::Value, Expr::value(value)));
                }
                if let Some(category) = patch.category {
                    values.push((Column::Category, Expr::value(category)));
                }
                let mut update =
                    Entity::update_many().col_expr(Column::UpdatedAt, Expr::current_timestamp());
                for (col, value) in values {
                    update = update.col_expr(col, value);
                }
                let row = update
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec_with_returning(txn)
                    .await
                    .map_err(db("update memory"))?
                    .into_iter()
                    .next()
                    .ok_or(ContentError::NotFound("memory"))?;
                Ok(content_mapper::memory(row)?)
            })
        })
        .await
    }

    async fn delete(&self, ctx: &TenantCtx, id: MemoryId) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let done = Entity::delete_many()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await
                    .map_err(db("delete memory"))?;
                if done.rows_affected == 0 {
                    return Err(ContentError::NotFound("memory"));
                }
                Ok(())
            })
        })
        .await
    }

    async fn search(
        &self,
        ctx: &TenantCtx,
        owner: UserId,
        query: &str,
        limit: usize,
    ) -> Result<Vec<ScoredMemory>> {
        let Some(words) = any_word_query(query) else {
            return Ok(Vec::new());
        };
        let limit = u64::try_from(limit).context("the search limit is out of range")?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let rows = Entity::find()
                    .expr_as(
                        Expr::cust_with_values(
                            r#"ts_rank("memories"."tsv", websearch_to_tsquery('simple', $1))"#,
                            [words.clone()],
                        ),
                        RANK,
                    )
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::OwnerId.eq(owner.as_uuid()))
                    .filter(Expr::cust_with_values(
                        r#""memories"."tsv" @@ websearch_to_tsquery('simple', $1)"#,
                        [words],
                    ))
                    .order_by(Expr::cust(RANK), Order::Desc)
                    .order_by_asc(Column::Id)
                    .limit(limit)
                    .into_model::<MemoryHit>()
                    .all(txn)
                    .await
                    .map_err(db("search memories"))?;
                rows.into_iter()
                    .map(|hit| {
                        Ok(ScoredMemory {
                            memory: content_mapper::memory(hit.memory)?,
                            score: hit.rank,
                        })
                    })
                    .collect()
            })
        })
        .await
    }
}
