//! `ModelChangeRepo` on Postgres: the change's state lives on the collection row, the
//! target-model vectors in `chunk_embeddings_next`. `switch` locks the collection row
//! (`FOR UPDATE`), which waits for any transaction still inserting chunks into it (their
//! foreign keys hold `FOR KEY SHARE` on the same row), so no chunk can slip in between
//! the "nothing left to embed" check and the swap.

use super::rag_common::db;
use crate::store::PgStore;
use crate::txn::Txn;
use anyhow::Context as _;
use async_trait::async_trait;
use sea_orm::prelude::PgVector;
use sea_orm::{ConnectionTrait as _, DbBackend, Statement, Value};
use std::fmt::Write as _;
use trellis_kernel::{TenantCtx, TenantId};
use trellis_rag::index::{ChunkId, CollectionId, Embedding};
use trellis_rag::{EmbeddingModel, ModelChangeProgress, ModelChangeRepo, RagError, Result};

/// Vectors per `INSERT` into the shadow table (3 parameters each).
const STORE_BATCH_ROWS: usize = 500;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// The collection's change target and status, locked `FOR UPDATE` when `lock`.
async fn change_of(
    txn: &Txn,
    tenant: TenantId,
    id: CollectionId,
    lock: bool,
) -> Result<(Option<String>, Option<i32>, Option<String>)> {
    let sql = format!(
        "SELECT next_embedding_model, next_embedding_dimension, model_change_status
           FROM knowledge_collections WHERE tenant_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = txn
        .query_one_raw(stmt(
            &sql,
            vec![tenant.as_uuid().into(), id.as_uuid().into()],
        ))
        .await
        .map_err(db("load the collection's model change"))?
        .ok_or(RagError::NotFound("collection"))?;
    let read = |e| RagError::Unexpected(anyhow::anyhow!("reading a collection row: {e}"));
    Ok((
        row.try_get("", "next_embedding_model").map_err(read)?,
        row.try_get("", "next_embedding_dimension").map_err(read)?,
        row.try_get("", "model_change_status").map_err(read)?,
    ))
}

async fn drop_shadow(txn: &Txn, tenant: TenantId, id: CollectionId) -> Result<()> {
    txn.execute_raw(stmt(
        "DELETE FROM chunk_embeddings_next WHERE tenant_id = $1 AND collection_id = $2",
        vec![tenant.as_uuid().into(), id.as_uuid().into()],
    ))
    .await
    .map_err(db("drop shadow vectors"))?;
    Ok(())
}

#[async_trait]
impl ModelChangeRepo for PgStore {
    async fn begin(&self, ctx: &TenantCtx, id: CollectionId, target: EmbeddingModel) -> Result<()> {
        let tenant = ctx.tenant_id();
        let dimension =
            i32::try_from(target.dimension).context("embedding dimension is out of range")?;
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let (model, dim, _) = change_of(txn, tenant, id, true).await?;
                if model.as_deref() != Some(target.id.as_str()) || dim != Some(dimension) {
                    drop_shadow(txn, tenant, id).await?;
                }
                txn.execute_raw(stmt(
                    "UPDATE knowledge_collections
                        SET next_embedding_model = $3, next_embedding_dimension = $4,
                            model_change_status = 'running', model_change_error = NULL,
                            model_change_started_at = now(), updated_at = now()
                      WHERE tenant_id = $1 AND id = $2",
                    vec![
                        tenant.as_uuid().into(),
                        id.as_uuid().into(),
                        target.id.clone().into(),
                        dimension.into(),
                    ],
                ))
                .await
                .map_err(db("start a model change"))?;
                Ok(())
            })
        })
        .await
    }

    async fn pending(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        limit: usize,
    ) -> Result<Vec<(ChunkId, String)>> {
        let tenant = ctx.tenant_id();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let (_, _, status) = change_of(txn, tenant, id, false).await?;
                if status.as_deref() != Some("running") {
                    return Ok(Vec::new());
                }
                let rows = txn
                    .query_all_raw(stmt(
                        "SELECT c.id, c.content FROM chunks c
                          WHERE c.tenant_id = $1 AND c.collection_id = $2
                            AND NOT EXISTS (SELECT 1 FROM chunk_embeddings_next n
                                             WHERE n.tenant_id = c.tenant_id AND n.chunk_id = c.id)
                          ORDER BY c.id LIMIT $3",
                        vec![tenant.as_uuid().into(), id.as_uuid().into(), limit.into()],
                    ))
                    .await
                    .map_err(db("find chunks to re-embed"))?;
                rows.into_iter()
                    .map(|r| {
                        let chunk: uuid::Uuid = r.try_get("", "id").map_err(db("read a chunk"))?;
                        let content: String =
                            r.try_get("", "content").map_err(db("read a chunk"))?;
                        Ok((ChunkId::from_uuid(chunk), content))
                    })
                    .collect()
            })
        })
        .await
    }

    async fn store(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        vectors: Vec<(ChunkId, Embedding)>,
    ) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let (_, dim, status) = change_of(txn, tenant, id, false).await?;
                let Some(dim) = dim.filter(|_| status.is_some()) else {
                    return Err(RagError::Conflict(
                        "no embedding model change is running".into(),
                    ));
                };
                for batch in vectors.chunks(STORE_BATCH_ROWS) {
                    // Joining chunks skips vectors of chunks deleted meanwhile instead
                    // of failing the whole batch on the foreign key.
                    let mut sql = String::from(
                        "INSERT INTO chunk_embeddings_next
                              (tenant_id, collection_id, embedding_dim, chunk_id, embedding)
                         SELECT $1, $2, $3, v.chunk_id, v.embedding FROM (VALUES ",
                    );
                    let mut values: Vec<Value> =
                        vec![tenant.as_uuid().into(), id.as_uuid().into(), dim.into()];
                    for (i, (chunk, vector)) in batch.iter().enumerate() {
                        let p = 4 + i * 2;
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        let _ = write!(sql, "(${p}::uuid, ${}::vector)", p + 1);
                        values.push(chunk.as_uuid().into());
                        values.push(PgVector::from(vector.as_slice().to_vec()).into());
                    }
                    sql.push_str(
                        ") AS v (chunk_id, embedding)
                         JOIN chunks c ON c.tenant_id = $1 AND c.id = v.chunk_id
                                      AND c.collection_id = $2
                         ON CONFLICT (tenant_id, chunk_id)
                         DO UPDATE SET embedding = EXCLUDED.embedding,
                                       embedding_dim = EXCLUDED.embedding_dim",
                    );
                    txn.execute_raw(stmt(&sql, values))
                        .await
                        .map_err(db("store shadow vectors"))?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn progress(&self, ctx: &TenantCtx, id: CollectionId) -> Result<ModelChangeProgress> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                change_of(txn, tenant, id, false).await?;
                let row = txn
                    .query_one_raw(stmt(
                        "SELECT count(*) AS total, count(n.chunk_id) AS embedded
                           FROM chunks c
                           LEFT JOIN chunk_embeddings_next n
                                  ON n.tenant_id = c.tenant_id AND n.chunk_id = c.id
                          WHERE c.tenant_id = $1 AND c.collection_id = $2",
                        vec![tenant.as_uuid().into(), id.as_uuid().into()],
                    ))
                    .await
                    .map_err(db("count re-embedded chunks"))?
                    .ok_or_else(|| {
                        RagError::Unexpected(anyhow::anyhow!("count returned no row"))
                    })?;
                let total: i64 = row.try_get("", "total").map_err(db("read progress"))?;
                let embedded: i64 = row.try_get("", "embedded").map_err(db("read progress"))?;
                Ok(ModelChangeProgress {
                    embedded: u64::try_from(embedded).unwrap_or(0),
                    total: u64::try_from(total).unwrap_or(0),
                })
            })
        })
        .await
    }

    async fn switch(&self, ctx: &TenantCtx, id: CollectionId) -> Result<bool> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let (_, _, status) = change_of(txn, tenant, id, true).await?;
                if status.as_deref() != Some("running") {
                    return Ok(false);
                }
                let keys = || vec![tenant.as_uuid().into(), id.as_uuid().into()];
                let missing = txn
                    .query_one_raw(stmt(
                        "SELECT EXISTS (
                           SELECT 1 FROM chunks c
                            WHERE c.tenant_id = $1 AND c.collection_id = $2
                              AND NOT EXISTS (SELECT 1 FROM chunk_embeddings_next n
                                               WHERE n.tenant_id = c.tenant_id AND n.chunk_id = c.id)
                         ) AS missing",
                        keys(),
                    ))
                    .await
                    .map_err(db("check for chunks left to re-embed"))?
                    .map(|r| r.try_get::<bool>("", "missing"))
                    .transpose()
                    .map_err(db("read the check"))?
                    .unwrap_or(true);
                if missing {
                    return Ok(false);
                }
                txn.execute_raw(stmt(
                    "UPDATE chunks c SET embedding = n.embedding, embedding_dim = n.embedding_dim
                       FROM chunk_embeddings_next n
                      WHERE c.tenant_id = $1 AND c.collection_id = $2
                        AND n.tenant_id = c.tenant_id AND n.chunk_id = c.id",
                    keys(),
                ))
                .await
                .map_err(db("swap in the new vectors"))?;
                drop_shadow(txn, tenant, id).await?;
                txn.execute_raw(stmt(
                    "UPDATE knowledge_collections
                        SET embedding_model = next_embedding_model,
                            embedding_dimension = next_embedding_dimension,
                            next_embedding_model = NULL, next_embedding_dimension = NULL,
                            model_change_status = NULL, model_change_error = NULL,
                            model_change_started_at = NULL, updated_at = now()
                      WHERE tenant_id = $1 AND id = $2",
                    keys(),
                ))
                .await
                .map_err(db("bind the collection to the new model"))?;
                Ok(true)
            })
        })
        .await
    }

    async fn fail(&self, ctx: &TenantCtx, id: CollectionId, error: &str) -> Result<()> {
        let tenant = ctx.tenant_id();
        let error: String = error.replace('\0', "").chars().take(4000).collect();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                change_of(txn, tenant, id, true).await?;
                txn.execute_raw(stmt(
                    "UPDATE knowledge_collections
                        SET model_change_status = 'failed', model_change_error = $3,
                            updated_at = now()
                      WHERE tenant_id = $1 AND id = $2 AND model_change_status IS NOT NULL",
                    vec![tenant.as_uuid().into(), id.as_uuid().into(), error.into()],
                ))
                .await
                .map_err(db("record a failed model change"))?;
                Ok(())
            })
        })
        .await
    }

    async fn cancel(&self, ctx: &TenantCtx, id: CollectionId) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                change_of(txn, tenant, id, true).await?;
                drop_shadow(txn, tenant, id).await?;
                txn.execute_raw(stmt(
                    "UPDATE knowledge_collections
                        SET next_embedding_model = NULL, next_embedding_dimension = NULL,
                            model_change_status = NULL, model_change_error = NULL,
                            model_change_started_at = NULL, updated_at = now()
                      WHERE tenant_id = $1 AND id = $2",
                    vec![tenant.as_uuid().into(), id.as_uuid().into()],
                ))
                .await
                .map_err(db("cancel a model change"))?;
                Ok(())
            })
        })
        .await
    }
}
