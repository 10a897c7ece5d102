//! Files attached to conversations: uploaded by the conversation's owner (type
//! sniffed from the bytes, size bounded), listed with the conversation, downloaded,
//! deleted, and sent to a knowledge collection, where they become a document that is
//! ingested like any upload.
//!
//! A file is seen by its owner, and by those who may read its conversation
//! (supporters); others in the tenant do not find it. Only the owner deletes it or
//! sends it on. Metadata is written after the bytes and deleted before them, so a
//! failure leaves at worst unreferenced bytes, never a file whose bytes are gone.

use super::{ContentService, acting_user, is_system, require};
use crate::{
    ContentError, ConversationId, FileAttachment, FileBlobs, FileId, FileSniffer,
    KnowledgeCollectionId, KnowledgeIntake, NewFile, Result,
};
use std::sync::Arc;
use trellis_kernel::{BlockingRunner, InvalidValue, Permission, TenantCtx, inspect_upload};

/// Default largest attachment: 20 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;

/// The ports files work through, besides the content service's own.
pub struct FilePorts {
    pub blobs: Arc<dyn FileBlobs>,
    pub sniffer: Arc<dyn FileSniffer>,
    pub knowledge: Arc<dyn KnowledgeIntake>,
    /// Where an upload is sniffed and hashed, off the threads that serve requests.
    pub blocking: Arc<dyn BlockingRunner>,
}

/// Attachment use cases.
#[derive(Clone)]
pub struct FileService {
    content: ContentService,
    blobs: Arc<dyn FileBlobs>,
    sniffer: Arc<dyn FileSniffer>,
    knowledge: Arc<dyn KnowledgeIntake>,
    blocking: Arc<dyn BlockingRunner>,
    max_file_bytes: u64,
}

/// A file uploaded to a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadFile {
    /// The name the client gave; only its last path segment is kept.
    pub filename: String,
    pub bytes: Vec<u8>,
}

fn clean_filename(name: &str) -> Result<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return Err(InvalidValue::new("file", "needs a file name").into());
    }
    Ok(cleaned.to_owned())
}

impl FileService {
    #[must_use]
    pub fn new(content: ContentService, ports: FilePorts, max_file_bytes: u64) -> Self {
        Self {
            content,
            blobs: ports.blobs,
            sniffer: ports.sniffer,
            knowledge: ports.knowledge,
            blocking: ports.blocking,
            max_file_bytes,
        }
    }

    /// The largest file accepted, in bytes.
    #[must_use]
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// Attaches a file to one's own conversation.
    ///
    /// # Errors
    /// `Forbidden`; `NotFound` for a conversation the caller may not read;
    /// `TooLarge`; `Invalid` for an empty file or no name; `Unsupported`;
    /// `Unexpected` when storage fails or reading the bytes off the request's thread
    /// did not finish (shutdown).
    pub async fn upload(
        &self,
        ctx: &TenantCtx,
        conversation: ConversationId,
        file: UploadFile,
    ) -> Result<FileAttachment> {
        require(ctx, Permission::ChatUse)?;
        let owner = acting_user(ctx)?;
        let conv = self
            .content
            .writable_conversation(ctx, conversation)
            .await?;
        let size = file.bytes.len() as u64;
        if size > self.max_file_bytes {
            return Err(ContentError::TooLarge {
                limit_bytes: self.max_file_bytes,
            });
        }
        if file.bytes.is_empty() {
            return Err(InvalidValue::new("file", "is empty").into());
        }
        let filename = clean_filename(&file.filename)?;
        let sniffer = self.sniffer.clone();
        let name = filename.clone();
        let (bytes, mime_type, checksum) =
            inspect_upload(self.blocking.as_ref(), file.bytes, move |bytes| {
                sniffer.sniff(bytes, &name)
            })
            .await
            .map_err(|e| ContentError::Unexpected(anyhow::anyhow!("reading the upload: {e}")))?;
        let mime_type = mime_type.ok_or_else(|| ContentError::Unsupported(filename.clone()))?;
        let id = FileId::new();
        let storage_key = format!("{}/files/{id}", ctx.tenant_id());
        self.blobs.put(&storage_key, bytes).await?;
        let inserted = self
            .content
            .files
            .insert(
                ctx,
                NewFile {
                    id,
                    owner_id: owner,
                    conversation_id: Some(conv.id),
                    filename,
                    mime_type,
                    size_bytes: size,
                    checksum,
                    storage_key: storage_key.clone(),
                },
            )
            .await;
        if inserted.is_err()
            && let Err(e) = self.blobs.delete(&storage_key).await
        {
            tracing::warn!(key = %storage_key, error = %e, "could not remove the bytes of a file that was not stored");
        }
        inserted
    }

    /// The files of a conversation the caller may read, oldest first.
    ///
    /// # Errors
    /// `Forbidden`; `NotFound` for a conversation the caller may not read.
    pub async fn list(
        &self,
        ctx: &TenantCtx,
        conversation: ConversationId,
    ) -> Result<Vec<FileAttachment>> {
        require(ctx, Permission::ChatUse)?;
        let conv = self
            .content
            .readable_conversation(ctx, conversation)
            .await?;
        self.content.files.for_conversation(ctx, conv.id).await
    }

    /// A file the caller may see: their own, or one of a conversation they may read.
    async fn visible(&self, ctx: &TenantCtx, id: FileId) -> Result<FileAttachment> {
        require(ctx, Permission::ChatUse)?;
        let f = self.content.files.get(ctx, id).await?;
        if ctx.user_id() == Some(f.owner_id) || is_system(ctx) {
            return Ok(f);
        }
        match f.conversation_id {
            Some(c) => match self.content.readable_conversation(ctx, c).await {
                Ok(_) => Ok(f),
                Err(ContentError::NotFound(_)) => Err(ContentError::NotFound("file")),
                Err(e) => Err(e),
            },
            None => Err(ContentError::NotFound("file")),
        }
    }

    /// A file the caller owns (others who may see it get `Forbidden`).
    async fn owned(&self, ctx: &TenantCtx, id: FileId) -> Result<FileAttachment> {
        let f = self.visible(ctx, id).await?;
        if ctx.user_id() == Some(f.owner_id) || is_system(ctx) {
            Ok(f)
        } else {
            Err(ContentError::Forbidden)
        }
    }

    /// # Errors
    /// `NotFound` for a file the caller may not see.
    pub async fn get(&self, ctx: &TenantCtx, id: FileId) -> Result<FileAttachment> {
        self.visible(ctx, id).await
    }

    /// The file with its bytes.
    ///
    /// # Errors
    /// `NotFound` for a file the caller may not see.
    pub async fn download(&self, ctx: &TenantCtx, id: FileId) -> Result<(FileAttachment, Vec<u8>)> {
        let f = self.visible(ctx, id).await?;
        let bytes = self.blobs.get(&f.storage_key).await?;
        Ok((f, bytes))
    }

    /// Deletes one's own file (messages that referenced it keep the id).
    ///
    /// # Errors
    /// `NotFound`; `Forbidden` for someone else's file the caller may see.
    pub async fn delete(&self, ctx: &TenantCtx, id: FileId) -> Result<()> {
        let f = self.owned(ctx, id).await?;
        self.content.files.delete(ctx, id).await?;
        self.content.attachments.forget(ctx, id);
        if let Err(e) = self.blobs.delete(&f.storage_key).await {
            // The metadata is gone, so nobody can reach the bytes; they are garbage.
            tracing::warn!(file = %id, error = %e, "could not delete a file's bytes");
        }
        Ok(())
    }

    /// Adds one's own file to a knowledge collection as a document, which is then
    /// ingested like any upload, and remembers the document on the file.
    ///
    /// # Errors
    /// `NotFound` for the file or a collection of another tenant; `Forbidden` for
    /// someone else's file or without the permission to add knowledge;
    /// `Unsupported` for a type the collection cannot extract.
    pub async fn send_to_collection(
        &self,
        ctx: &TenantCtx,
        id: FileId,
        collection: KnowledgeCollectionId,
    ) -> Result<FileAttachment> {
        let f = self.owned(ctx, id).await?;
        let bytes = self.blobs.get(&f.storage_key).await?;
        let document = self
            .knowledge
            .add_document(ctx, collection, &f.filename, bytes)
            .await?;
        self.content
            .files
            .set_knowledge_document(ctx, id, document)
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_segment_of_a_file_name_is_kept() {
        assert_eq!(clean_filename("../../etc/notes.md").unwrap(), "notes.md");
        assert_eq!(clean_filename("C:\\docs\\plan.txt").unwrap(), "plan.txt");
        assert!(clean_filename("dir/..").is_err());
        assert!(clean_filename("  ").is_err());
    }
}
