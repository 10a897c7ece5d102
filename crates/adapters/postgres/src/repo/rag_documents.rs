//! `DocumentRepo` on Postgres. A document's collection must be in the caller's tenant
//! (the composite foreign key says so; its violation is `NotFound("collection")`), the
//! same bytes can be in a collection once (`documents_checksum_key`), and deleting a
//! document cascades to its chunks in the same statement.

use super::rag_common::db;
use crate::entity::document::{ActiveModel, Column, Entity};
use crate::rag_mapper;
use crate::store::{PgStore, finish_page, keyset};
use anyhow::Context as _;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use trellis_kernel::{Page, PageRequest, TenantCtx};
use trellis_rag::index::CollectionId;
use trellis_rag::{
    Document, DocumentFilter, DocumentId, DocumentRepo, DocumentStatus, NewDocument, RagError,
    Result, StatusChange,
};

#[async_trait]
impl DocumentRepo for PgStore {
    async fn insert(&self, ctx: &TenantCtx, new: NewDocument) -> Result<Document> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let size =
                    i64::try_from(new.size_bytes).context("document size is out of range")?;
                let row = ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(new.id.as_uuid()),
                    collection_id: Set(new.collection_id.as_uuid()),
                    filename: Set(new.filename),
                    original_name: Set(new.original_name),
                    mime_type: Set(new.mime_type),
                    size_bytes: Set(size),
                    checksum: Set(new.checksum),
                    storage_key: Set(new.storage_key),
                    status: Set(DocumentStatus::Uploaded.as_str().to_owned()),
                    error: Set(None),
                    processed_at: Set(None),
                    source_type: Set(new.source_type.as_str().to_owned()),
                    source_id: Set(new.source_id),
                    metadata: Set(rag_mapper::metadata_to_json(&new.metadata)),
                    chunk_count: Set(0),
                    uploaded_by: Set(new.uploaded_by.map(|u| u.as_uuid())),
                    ..Default::default()
                }
                .insert(txn)
                .await
                .map_err(db("insert document"))?;
                Ok(rag_mapper::document(row)?)
            })
        })
        .await
    }

    async fn get(&self, ctx: &TenantCtx, id: DocumentId) -> Result<Document> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = Entity::find_by_id((tenant.as_uuid(), id.as_uuid()))
                    .one(txn)
                    .await
                    .map_err(db("load document"))?
                    .ok_or(RagError::NotFound("document"))?;
                Ok(rag_mapper::document(row)?)
            })
        })
        .await
    }

    async fn find_by_checksum(
        &self,
        ctx: &TenantCtx,
        collection: CollectionId,
        checksum: &str,
    ) -> Result<Option<Document>> {
        let tenant = ctx.tenant_id();
        let checksum = checksum.to_owned();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = Entity::find()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::CollectionId.eq(collection.as_uuid()))
                    .filter(Column::Checksum.eq(checksum))
                    .one(txn)
                    .await
                    .map_err(db("find document by checksum"))?;
                Ok(row.map(rag_mapper::document).transpose()?)
            })
        })
        .await
    }

    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &DocumentFilter,
        page: PageRequest,
    ) -> Result<Page<Document>> {
        let tenant = ctx.tenant_id();
        let filter = filter.clone();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let mut select = Entity::find().filter(Column::TenantId.eq(tenant.as_uuid()));
                if let Some(collection) = filter.collection {
                    select = select.filter(Column::CollectionId.eq(collection.as_uuid()));
                }
                if let Some(status) = filter.status {
                    select = select.filter(Column::Status.eq(status.as_str()));
                }
                let rows = keyset(select, Column::Id, page)
                    .all(txn)
                    .await
                    .map_err(db("list documents"))?;
                Ok(finish_page(page, rows, |r| r.id, rag_mapper::document)?)
            })
        })
        .await
    }

    async fn set_status(
        &self,
        ctx: &TenantCtx,
        id: DocumentId,
        change: StatusChange,
    ) -> Result<Document> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                // Like the in-memory adapter: status, error and processed_at are set as
                // given (a new status clears an old error); the chunk count only when
                // the change carries one.
                let mut values: Vec<(Column, SimpleExpr)> = vec![
                    (Column::Status, Expr::value(change.status.as_str())),
                    (Column::Error, Expr::value(change.error)),
                    (Column::ProcessedAt, Expr::value(change.processed_at)),
                    (Column::UpdatedAt, Expr::current_timestamp()),
                ];
                if let Some(count) = change.chunk_count {
                    let count = i32::try_from(count).context("chunk count is out of range")?;
                    values.push((Column::ChunkCount, Expr::value(count)));
                }
                let mut update = Entity::update_many();
                for (col, value) in values {
                    update = update.col_expr(col, value);
                }
                let row = update
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec_with_returning(txn)
                    .await
                    .map_err(db("set document status"))?
                    .into_iter()
                    .next()
                    .ok_or(RagError::NotFound("document"))?;
                Ok(rag_mapper::document(row)?)
            })
        })
        .await
    }

    async fn delete(&self, ctx: &TenantCtx, id: DocumentId) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let done = Entity::delete_many()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await
                    .map_err(db("delete document"))?;
                if done.rows_affected == 0 {
                    return Err(RagError::NotFound("document"));
                }
                Ok(())
            })
        })
        .await
    }
}
