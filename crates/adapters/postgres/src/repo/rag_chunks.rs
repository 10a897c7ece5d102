//! `ChunkRepo` on Postgres. Replacing a document's chunks is one transaction: lock the
//! document, delete its chunks, insert the new ones in multi-row `INSERT`s of
//! [`INSERT_BATCH_ROWS`] — a few round trips per document, never one per chunk. Any
//! failure rolls all of it back, so readers see the old chunks or the new, never a mix.

use super::rag_common::{db, without_nul};
use crate::entity::chunk::{ChunkRow, Column, Entity};
use crate::entity::document;
use crate::rag_mapper;
use crate::store::PgStore;
use crate::txn::Txn;
use anyhow::Context as _;
use async_trait::async_trait;
use sea_orm::prelude::PgVector;
use sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, DbBackend, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Statement, Value,
};
use std::collections::HashMap;
use std::fmt::Write as _;
use trellis_kernel::{TenantCtx, TenantId};
use trellis_rag::index::{ChunkId, CollectionId};
use trellis_rag::{Chunk, ChunkRepo, CitedChunk, DocumentId, EmbeddedChunk, RagError, Result};

/// Rows per `INSERT`. Each row binds 11 parameters (Postgres allows 65 535 per
/// statement) and, at 1 536 dimensions, about 6 KiB of vector: 500 rows keep a
/// statement near 3 MiB while a typical document still goes in one round trip.
pub(crate) const INSERT_BATCH_ROWS: usize = 500;

/// Parameters shared by every row of a batch: `$1` tenant, `$2` document,
/// `$3` collection, `$4` embedding dimension.
const SHARED_PARAMS: usize = 4;
const PARAMS_PER_ROW: usize = 11;

/// Locks the document for this transaction and returns its collection and the
/// collection's embedding dimension.
///
/// The lock serialises two replacements of one document (a worker whose lease ran out
/// and the one that took the job over): without it both could delete the same old
/// rows and each insert its own new ones, leaving two sets of chunks.
async fn lock_document(
    txn: &Txn,
    tenant: TenantId,
    document: DocumentId,
) -> Result<(CollectionId, i32)> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT d.collection_id, c.embedding_dimension
               FROM documents d
               JOIN knowledge_collections c ON c.tenant_id = d.tenant_id AND c.id = d.collection_id
              WHERE d.tenant_id = $1 AND d.id = $2
                FOR NO KEY UPDATE OF d",
            [tenant.as_uuid().into(), document.as_uuid().into()],
        ))
        .await
        .map_err(db("lock document"))?
        .ok_or(RagError::NotFound("document"))?;
    let collection: uuid::Uuid = row
        .try_get("", "collection_id")
        .map_err(db("read document"))?;
    let dimension: i32 = row
        .try_get("", "embedding_dimension")
        .map_err(db("read collection"))?;
    Ok((CollectionId::from_uuid(collection), dimension))
}

fn int(value: u32, what: &'static str) -> Result<i32> {
    Ok(i32::try_from(value).with_context(|| format!("chunk {what} is out of range"))?)
}

/// One multi-row `INSERT` of `batch`.
fn insert_statement(
    tenant: TenantId,
    document: DocumentId,
    collection: CollectionId,
    dimension: i32,
    batch: &[EmbeddedChunk],
) -> Result<Statement> {
    let mut sql = String::from(
        "INSERT INTO chunks (tenant_id, document_id, collection_id, embedding_dim, id, position, \
         content, start_offset, end_offset, page, section, token_count, source_type, metadata, \
         embedding) VALUES ",
    );
    let mut values: Vec<Value> = Vec::with_capacity(SHARED_PARAMS + batch.len() * PARAMS_PER_ROW);
    values.extend([
        tenant.as_uuid().into(),
        document.as_uuid().into(),
        collection.as_uuid().into(),
        dimension.into(),
    ]);
    for (row, embedded) in batch.iter().enumerate() {
        let c = &embedded.chunk;
        let first = SHARED_PARAMS + row * PARAMS_PER_ROW + 1;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str("($1, $2, $3, $4");
        for p in first..first + PARAMS_PER_ROW {
            // Writing to a String cannot fail.
            let _ = write!(sql, ", ${p}");
        }
        sql.push(')');
        values.extend([
            c.id.as_uuid().into(),
            int(c.position, "position")?.into(),
            without_nul(&c.content).into_owned().into(),
            int(c.span.start, "start offset")?.into(),
            int(c.span.end, "end offset")?.into(),
            c.span.page.map(|p| int(p, "page")).transpose()?.into(),
            c.span
                .section
                .as_deref()
                .map(|s| without_nul(s).into_owned())
                .into(),
            int(c.token_count, "token count")?.into(),
            c.source_type.as_str().into(),
            rag_mapper::metadata_to_json(&c.metadata).into(),
            PgVector::from(embedded.embedding.as_slice().to_vec()).into(),
        ]);
    }
    Ok(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
}

/// The tenant's chunks among `ids`, without their embeddings.
async fn chunk_rows(txn: &Txn, tenant: TenantId, ids: Vec<uuid::Uuid>) -> Result<Vec<ChunkRow>> {
    Entity::find()
        .filter(Column::TenantId.eq(tenant.as_uuid()))
        .filter(Column::Id.is_in(ids))
        .into_partial_model()
        .all(txn)
        .await
        .map_err(db("load chunks"))
}

#[async_trait]
impl ChunkRepo for PgStore {
    async fn replace_for_document(
        &self,
        ctx: &TenantCtx,
        document: DocumentId,
        chunks: Vec<EmbeddedChunk>,
    ) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let (collection, dimension) = lock_document(txn, tenant, document).await?;
                // A chunk claiming another document or collection is a caller bug; the
                // composite foreign key would refuse it too, less legibly.
                if let Some(stray) = chunks.iter().find(|c| {
                    c.chunk.document_id != document || c.chunk.collection_id != collection
                }) {
                    return Err(anyhow::anyhow!(
                        "chunk {} belongs to document {} in collection {}, not to document \
                         {document} in collection {collection}",
                        stray.chunk.id,
                        stray.chunk.document_id,
                        stray.chunk.collection_id
                    )
                    .into());
                }
                Entity::delete_many()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::DocumentId.eq(document.as_uuid()))
                    .exec(txn)
                    .await
                    .map_err(db("delete old chunks"))?;
                // The database checks each vector against the collection's dimension
                // (chunks_embedding_dim_check); a mismatch anywhere rolls back the
                // delete above and every batch before it.
                for batch in chunks.chunks(INSERT_BATCH_ROWS) {
                    let stmt = insert_statement(tenant, document, collection, dimension, batch)?;
                    txn.execute_raw(stmt).await.map_err(db("store chunks"))?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn get_many(&self, ctx: &TenantCtx, ids: &[ChunkId]) -> Result<Vec<Chunk>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let tenant = ctx.tenant_id();
        let ids: Vec<uuid::Uuid> = ids.iter().map(ChunkId::as_uuid).collect();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let rows = chunk_rows(txn, tenant, ids).await?;
                Ok(rows
                    .into_iter()
                    .map(rag_mapper::chunk)
                    .collect::<anyhow::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn cited(&self, ctx: &TenantCtx, ids: &[ChunkId]) -> Result<Vec<CitedChunk>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let tenant = ctx.tenant_id();
        let ids: Vec<uuid::Uuid> = ids.iter().map(ChunkId::as_uuid).collect();
        // Two statements in one transaction: a transaction of its own for the names
        // would cost three more round trips on every search.
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let rows = chunk_rows(txn, tenant, ids).await?;
                let mut documents: Vec<uuid::Uuid> = rows.iter().map(|r| r.document_id).collect();
                documents.sort_unstable();
                documents.dedup();
                let names: HashMap<uuid::Uuid, String> = document::Entity::find()
                    .select_only()
                    .column(document::Column::Id)
                    .column(document::Column::OriginalName)
                    .filter(document::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(document::Column::Id.is_in(documents))
                    .into_tuple()
                    .all(txn)
                    .await
                    .map_err(db("load document names"))?
                    .into_iter()
                    .collect();
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let Some(filename) = names.get(&row.document_id).cloned() else {
                        continue;
                    };
                    out.push(CitedChunk {
                        chunk: rag_mapper::chunk(row)?,
                        filename,
                    });
                }
                Ok(out)
            })
        })
        .await
    }

    async fn for_document(&self, ctx: &TenantCtx, document: DocumentId) -> Result<Vec<Chunk>> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let rows: Vec<ChunkRow> = Entity::find()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::DocumentId.eq(document.as_uuid()))
                    .order_by_asc(Column::Position)
                    .into_partial_model()
                    .all(txn)
                    .await
                    .map_err(db("load a document's chunks"))?;
                Ok(rows
                    .into_iter()
                    .map(rag_mapper::chunk)
                    .collect::<anyhow::Result<Vec<_>>>()?)
            })
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use trellis_rag::index::Embedding;
    use trellis_rag::{SourceType, Span};

    fn embedded(document: DocumentId, collection: CollectionId, position: u32) -> EmbeddedChunk {
        EmbeddedChunk {
            chunk: Chunk {
                id: ChunkId::new(),
                document_id: document,
                collection_id: collection,
                position,
                content: "a\0b".into(),
                span: Span {
                    start: 0,
                    end: 3,
                    page: None,
                    section: None,
                },
                token_count: 2,
                source_type: SourceType::Upload,
                metadata: Default::default(),
            },
            embedding: Embedding::new(vec![1.0, 0.0]).unwrap(),
        }
    }

    #[test]
    fn a_batch_is_one_insert_that_shares_the_document_columns() {
        let (t, d, c) = (TenantId::new(), DocumentId::new(), CollectionId::new());
        let batch: Vec<_> = (0..3).map(|i| embedded(d, c, i)).collect();
        let stmt = insert_statement(t, d, c, 2, &batch).unwrap();
        assert_eq!(stmt.sql.matches("INSERT").count(), 1);
        assert_eq!(stmt.sql.matches("($1, $2, $3, $4").count(), 3);
        assert!(stmt.sql.ends_with("$37)"), "{}", stmt.sql);
        let values = stmt.values.unwrap();
        assert_eq!(values.0.len(), SHARED_PARAMS + 3 * PARAMS_PER_ROW);
        assert_eq!(values.0[6], Value::from("a b".to_owned()));
    }
}
