//! `CollectionRepo` on Postgres. Deleting a collection is one `DELETE`: the foreign
//! keys cascade to its documents, chunks and sync runs in the same statement.

use super::rag_common::db;
use crate::entity::knowledge_collection::{ActiveModel, Column, Entity, Model};
use crate::rag_mapper;
use crate::store::{PgStore, finish_page, keyset};
use crate::txn::Txn;
use anyhow::Context as _;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use trellis_kernel::{Page, PageRequest, TenantCtx, TenantId};
use trellis_rag::index::CollectionId;
use trellis_rag::{
    Collection, CollectionPatch, CollectionRepo, EmbeddingModel, NewCollection, RagError, Result,
};

/// An `integer` column value from a domain `u32` bounded far below `i32::MAX`.
fn int(value: u32, what: &'static str) -> Result<i32> {
    Ok(i32::try_from(value).with_context(|| format!("{what} is out of range"))?)
}

/// Sets `values` on one collection; `NotFound` when there is none in this tenant.
async fn update_one(
    txn: &Txn,
    tenant: TenantId,
    id: CollectionId,
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
        .exec_with_returning(txn)
        .await
        .map_err(db(what))?
        .into_iter()
        .next()
        .ok_or(RagError::NotFound("collection"))
}

#[async_trait]
impl CollectionRepo for PgStore {
    async fn insert(&self, ctx: &TenantCtx, new: NewCollection) -> Result<Collection> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let row = ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(new.id.as_uuid()),
                    name: Set(new.name),
                    description: Set(new.description),
                    agent_id: Set(new.agent_id),
                    source_type: Set(new.source_type.as_str().to_owned()),
                    chunk_max_tokens: Set(int(new.chunking.max_tokens, "chunk_max_tokens")?),
                    chunk_overlap_tokens: Set(int(
                        new.chunking.overlap_tokens,
                        "chunk_overlap_tokens",
                    )?),
                    embedding_model: Set(new.embedding_model.id),
                    embedding_dimension: Set(int(
                        new.embedding_model.dimension,
                        "embedding_dimension",
                    )?),
                    created_by: Set(new.created_by.map(|u| u.as_uuid())),
                    ..Default::default()
                }
                .insert(txn)
                .await
                .map_err(db("insert collection"))?;
                Ok(rag_mapper::collection(row)?)
            })
        })
        .await
    }

    async fn get(&self, ctx: &TenantCtx, id: CollectionId) -> Result<Collection> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = Entity::find_by_id((tenant.as_uuid(), id.as_uuid()))
                    .one(txn)
                    .await
                    .map_err(db("load collection"))?
                    .ok_or(RagError::NotFound("collection"))?;
                Ok(rag_mapper::collection(row)?)
            })
        })
        .await
    }

    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<Collection>> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let select = Entity::find().filter(Column::TenantId.eq(tenant.as_uuid()));
                let rows = keyset(select, Column::Id, page)
                    .all(txn)
                    .await
                    .map_err(db("list collections"))?;
                Ok(finish_page(page, rows, |r| r.id, rag_mapper::collection)?)
            })
        })
        .await
    }

    async fn update(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        patch: CollectionPatch,
    ) -> Result<Collection> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let mut values: Vec<(Column, SimpleExpr)> = Vec::new();
                if let Some(name) = patch.name {
                    values.push((Column::Name, Expr::value(name)));
                }
                if let Some(description) = patch.description {
                    values.push((Column::Description, Expr::value(description)));
                }
                if let Some(agent) = patch.agent_id {
                    values.push((Column::AgentId, Expr::value(agent)));
                }
                if let Some(chunking) = patch.chunking {
                    let max = int(chunking.max_tokens, "chunk_max_tokens")?;
                    let overlap = int(chunking.overlap_tokens, "chunk_overlap_tokens")?;
                    values.push((Column::ChunkMaxTokens, Expr::value(max)));
                    values.push((Column::ChunkOverlapTokens, Expr::value(overlap)));
                }
                let row = update_one(txn, tenant, id, values, "update collection").await?;
                Ok(rag_mapper::collection(row)?)
            })
        })
        .await
    }

    async fn set_embedding_model(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        model: EmbeddingModel,
    ) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let dimension = int(model.dimension, "embedding_dimension")?;
                let values = vec![
                    (Column::EmbeddingModel, Expr::value(model.id)),
                    (Column::EmbeddingDimension, Expr::value(dimension)),
                ];
                update_one(txn, tenant, id, values, "set embedding model").await?;
                Ok(())
            })
        })
        .await
    }

    async fn delete(&self, ctx: &TenantCtx, id: CollectionId) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let done = Entity::delete_many()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await
                    .map_err(db("delete collection"))?;
                if done.rows_affected == 0 {
                    return Err(RagError::NotFound("collection"));
                }
                Ok(())
            })
        })
        .await
    }
}
