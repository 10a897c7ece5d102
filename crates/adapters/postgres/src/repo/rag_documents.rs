//! `DocumentRepo` on Postgres. A document's collection must be in the caller's tenant
//! (the composite foreign key says so; its violation is `NotFound("collection")`), the
//! same bytes can be in a collection once (`documents_checksum_key`), and deleting a
//! document cascades to its chunks in the same statement.

use super::kept_sql::{Bound, KeptSql};
use super::rag_common::db;
use crate::entity::document::{ActiveModel, Column, Entity, Model};
use crate::rag_mapper;
use crate::store::{PgStore, by_position, finish_page, keyset, select_columns};
use anyhow::Context as _;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::sqlx::Row as _;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Select, Set,
};
use trellis_kernel::{Page, PageRequest, TenantCtx, TenantId};
use trellis_rag::index::CollectionId;
use trellis_rag::{
    Document, DocumentFilter, DocumentId, DocumentRepo, DocumentStatus, NewDocument, RagError,
    Result, StatusChange,
};

/// Every column of a document, in the order [`read_documents`] reads them.
const DOCUMENT_COLUMNS: [Column; 19] = [
    Column::TenantId,
    Column::Id,
    Column::CollectionId,
    Column::Filename,
    Column::OriginalName,
    Column::MimeType,
    Column::SizeBytes,
    Column::Checksum,
    Column::StorageKey,
    Column::Status,
    Column::Error,
    Column::ProcessedAt,
    Column::SourceType,
    Column::SourceId,
    Column::Metadata,
    Column::ChunkCount,
    Column::UploadedBy,
    Column::CreatedAt,
    Column::UpdatedAt,
];

/// Runs a query of documents as a read of its own (`PgStore::read_columns`): one
/// pipeline on a loopback server instead of three round trips. Clients poll a
/// document, or a collection's list, until ingestion is done.
async fn read_documents(
    store: &PgStore,
    ctx: &TenantCtx,
    select: Select<Entity>,
    what: &'static str,
) -> Result<Vec<Model>> {
    read_documents_by(store, ctx, select_columns(select, &DOCUMENT_COLUMNS), what).await
}

/// [`read_documents`] of a statement that selects [`DOCUMENT_COLUMNS`].
async fn read_documents_by(
    store: &PgStore,
    ctx: &TenantCtx,
    stmt: sea_orm::Statement,
    what: &'static str,
) -> Result<Vec<Model>> {
    store
        .read_by_position(
            ctx,
            stmt,
            &DOCUMENT_COLUMNS,
            by_position!(|row| Model {
                tenant_id: row.try_get(0)?,
                id: row.try_get(1)?,
                collection_id: row.try_get(2)?,
                filename: row.try_get(3)?,
                original_name: row.try_get(4)?,
                mime_type: row.try_get(5)?,
                size_bytes: row.try_get(6)?,
                checksum: row.try_get(7)?,
                storage_key: row.try_get(8)?,
                status: row.try_get(9)?,
                error: row.try_get(10)?,
                processed_at: row.try_get(11)?,
                source_type: row.try_get(12)?,
                source_id: row.try_get(13)?,
                metadata: row.try_get(14)?,
                chunk_count: row.try_get(15)?,
                uploaded_by: row.try_get(16)?,
                created_at: row.try_get(17)?,
                updated_at: row.try_get(18)?,
            }),
            what,
        )
        .await
}

/// The list's query as sea-query builds it: filtered by the given collection and
/// status, after the cursor, one more than the limit.
fn list_select(tenant: TenantId, filter: &DocumentFilter, page: PageRequest) -> sea_orm::Statement {
    let mut select = Entity::find().filter(Column::TenantId.eq(tenant.as_uuid()));
    if let Some(collection) = filter.collection {
        select = select.filter(Column::CollectionId.eq(collection.as_uuid()));
    }
    if let Some(status) = filter.status {
        select = select.filter(Column::Status.eq(status.as_str()));
    }
    select_columns(keyset(select, Column::Id, page), &DOCUMENT_COLUMNS)
}

/// The list's SQL for each shape of request: a collection filter or not, a status
/// filter or not, a cursor or not.
static LIST_SQL: KeptSql<8> = KeptSql::new();

/// [`list_select`]'s statement, with the SQL rendered once per shape.
fn list_statement(
    tenant: TenantId,
    filter: &DocumentFilter,
    page: PageRequest,
) -> sea_orm::Statement {
    let bound = Bound::tenant(tenant.as_uuid())
        .optional(filter.collection.map(|c| c.as_uuid()))
        .optional(filter.status.map(|s| s.as_str()))
        .page(page);
    LIST_SQL.statement(bound, || list_select(tenant, filter, page))
}

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
        let select = Entity::find_by_id((ctx.tenant_id().as_uuid(), id.as_uuid()));
        let row = read_documents(self, ctx, select, "load document")
            .await?
            .pop()
            .ok_or(RagError::NotFound("document"))?;
        Ok(rag_mapper::document(row)?)
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
        let stmt = list_statement(ctx.tenant_id(), filter, page);
        let rows = read_documents_by(self, ctx, stmt, "list documents").await?;
        Ok(finish_page(page, rows, |r| r.id, rag_mapper::document)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::kept_sql::tests::pages;

    #[test]
    fn the_lists_statement_is_the_one_sea_query_builds_for_every_shape_and_value() {
        // Each shape twice with other values: the second is served from the kept SQL.
        for (tenant, status) in [
            (1_u128, DocumentStatus::Processed),
            (2, DocumentStatus::Error),
        ] {
            let tenant = TenantId::from_uuid(uuid::Uuid::from_u128(tenant));
            for shape in 0..8_u8 {
                let filter = DocumentFilter {
                    collection: (shape & 1 != 0).then(CollectionId::new),
                    status: (shape & 2 != 0).then_some(status),
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
