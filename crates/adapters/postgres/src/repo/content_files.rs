//! `FileRepo` on Postgres: attachment metadata (the bytes are in blob storage). A file
//! names its conversation through a tenant-scoped foreign key, so a conversation of
//! another tenant, or none, is `NotFound`; deleting the conversation detaches the file.

use super::content_common::{db, violates};
use crate::content_mapper;
use crate::entity::file::{ActiveModel, Column, Entity};
use crate::store::PgStore;
use anyhow::Context as _;
use async_trait::async_trait;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    Set,
};
use trellis_content::{
    ContentError, ConversationId, FileAttachment, FileId, FileRepo, KnowledgeDocumentId, NewFile,
    Result,
};
use trellis_kernel::TenantCtx;

#[async_trait]
impl FileRepo for PgStore {
    async fn insert(&self, ctx: &TenantCtx, new: NewFile) -> Result<FileAttachment> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let size =
                    i64::try_from(new.size_bytes).context("the file size is out of range")?;
                let row = ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(new.id.as_uuid()),
                    owner_id: Set(new.owner_id.as_uuid()),
                    conversation_id: Set(new.conversation_id.map(|c| c.as_uuid())),
                    filename: Set(new.filename),
                    mime_type: Set(new.mime_type),
                    size_bytes: Set(size),
                    checksum: Set(new.checksum),
                    storage_key: Set(new.storage_key),
                    ..Default::default()
                }
                .insert(txn)
                .await
                .map_err(db("insert file"))?;
                Ok(content_mapper::file(row)?)
            })
        })
        .await
    }

    async fn get(&self, ctx: &TenantCtx, id: FileId) -> Result<FileAttachment> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let row = Entity::find_by_id((tenant.as_uuid(), id.as_uuid()))
                    .one(txn)
                    .await
                    .map_err(db("load file"))?
                    .ok_or(ContentError::NotFound("file"))?;
                Ok(content_mapper::file(row)?)
            })
        })
        .await
    }

    async fn for_conversation(
        &self,
        ctx: &TenantCtx,
        conversation: ConversationId,
    ) -> Result<Vec<FileAttachment>> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let rows = Entity::find()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::ConversationId.eq(conversation.as_uuid()))
                    .order_by_asc(Column::CreatedAt)
                    .order_by_asc(Column::Id)
                    .all(txn)
                    .await
                    .map_err(db("list files"))?;
                rows.into_iter()
                    .map(|r| Ok(content_mapper::file(r)?))
                    .collect()
            })
        })
        .await
    }

    async fn set_knowledge_document(
        &self,
        ctx: &TenantCtx,
        id: FileId,
        document: KnowledgeDocumentId,
    ) -> Result<FileAttachment> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let done = Entity::update_many()
                    .col_expr(Column::KnowledgeDocumentId, Expr::value(document.as_uuid()))
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await
                    .map_err(|e| {
                        if violates(&e, "files_knowledge_document_fkey") {
                            ContentError::NotFound("document")
                        } else {
                            db("link file to document")(e)
                        }
                    })?;
                if done.rows_affected == 0 {
                    return Err(ContentError::NotFound("file"));
                }
                let row = Entity::find_by_id((tenant.as_uuid(), id.as_uuid()))
                    .one(txn)
                    .await
                    .map_err(db("load file"))?
                    .ok_or(ContentError::NotFound("file"))?;
                Ok(content_mapper::file(row)?)
            })
        })
        .await
    }

    async fn delete(&self, ctx: &TenantCtx, id: FileId) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                // Its attachments to messages go with it (ON DELETE CASCADE).
                let done = Entity::delete_many()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await
                    .map_err(db("delete file"))?;
                if done.rows_affected == 0 {
                    return Err(ContentError::NotFound("file"));
                }
                Ok(())
            })
        })
        .await
    }
}
