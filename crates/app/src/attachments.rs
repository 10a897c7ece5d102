//! The content domain's file ports over RAG's pieces: attachment bytes go to the same
//! blob storage as knowledge documents, types are sniffed and text is read for prompts
//! by the same extractor, and
//! sending a file to a collection is an ordinary RAG upload (so the ingestion
//! workers pick it up like any other).

use async_trait::async_trait;
use std::sync::Arc;
use trellis_content::{
    AttachmentReader, ContentError, FileAttachment, FileBlobs, FileSniffer, KnowledgeCollectionId,
    KnowledgeDocumentId, KnowledgeIntake,
};
use trellis_kernel::TenantCtx;
use trellis_rag::index::CollectionId;
use trellis_rag::service::{RagService, Upload};
use trellis_rag::{BlobStore, RagError, TextExtractor};

/// Attachment bytes in RAG's blob storage (keys start with the tenant id and
/// `files/`, so they never collide with documents').
pub struct SharedBlobs(pub Arc<dyn BlobStore>);

#[async_trait]
impl FileBlobs for SharedBlobs {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> trellis_content::Result<()> {
        Ok(self.0.put(key, bytes).await?)
    }

    async fn get(&self, key: &str) -> trellis_content::Result<Vec<u8>> {
        Ok(self.0.get(key).await?)
    }

    async fn delete(&self, key: &str) -> trellis_content::Result<()> {
        Ok(self.0.delete(key).await?)
    }
}

/// Sniffing by RAG's text extractor: attachments are the kinds of file the
/// knowledge base can read, so any of them can be sent on to a collection.
pub struct ExtractorSniffer(pub Arc<dyn TextExtractor>);

impl FileSniffer for ExtractorSniffer {
    fn sniff(&self, bytes: &[u8], filename: &str) -> Option<String> {
        self.0.sniff(bytes, filename)
    }
}

/// An attachment's text for a prompt: its bytes from blob storage, extracted like a
/// knowledge document (PDF text layer, HTML without scripts, …) on a blocking thread,
/// since a large PDF takes a while.
pub struct ExtractedAttachments {
    pub blobs: Arc<dyn BlobStore>,
    pub extractor: Arc<dyn TextExtractor>,
}

#[async_trait]
impl AttachmentReader for ExtractedAttachments {
    async fn text(
        &self,
        _ctx: &TenantCtx,
        file: &FileAttachment,
        max_chars: usize,
    ) -> trellis_content::Result<Option<String>> {
        let bytes = self.blobs.get(&file.storage_key).await?;
        let extractor = self.extractor.clone();
        let filename = file.filename.clone();
        let extracted = tokio::task::spawn_blocking(move || extractor.extract(&bytes, &filename))
            .await
            .map_err(|e| ContentError::Unexpected(anyhow::Error::new(e)))?;
        match extracted {
            Ok(e) if !e.text.trim().is_empty() => {
                Ok(Some(e.text.chars().take(max_chars).collect()))
            }
            Ok(_) => Ok(None),
            Err(e) => {
                // The file was accepted when uploaded, so this is unusual (a type the
                // sniffer knows but cannot read, a corrupt PDF): answer without it.
                tracing::warn!(file = %file.id, error = %e, "an attached file has no readable text");
                Ok(None)
            }
        }
    }
}

/// Sending a file to a collection through [`RagService::upload`].
pub struct RagIntake(pub Arc<RagService>);

fn content_error(e: RagError) -> ContentError {
    match e {
        RagError::NotFound(what) => ContentError::NotFound(what),
        RagError::Forbidden => ContentError::Forbidden,
        RagError::Invalid(v) => ContentError::Invalid(v),
        RagError::TooLarge { limit_bytes } => ContentError::TooLarge { limit_bytes },
        RagError::Unsupported(name) => ContentError::Unsupported(name),
        RagError::Conflict(msg) => ContentError::Conflict(msg),
        other => ContentError::Unexpected(anyhow::Error::new(other)),
    }
}

#[async_trait]
impl KnowledgeIntake for RagIntake {
    async fn add_document(
        &self,
        ctx: &TenantCtx,
        collection: KnowledgeCollectionId,
        filename: &str,
        bytes: Vec<u8>,
    ) -> trellis_content::Result<KnowledgeDocumentId> {
        let outcome = self
            .0
            .upload(
                ctx,
                CollectionId::from_uuid(collection.as_uuid()),
                Upload {
                    original_name: filename.to_owned(),
                    bytes,
                    metadata: Default::default(),
                },
            )
            .await
            .map_err(content_error)?;
        Ok(KnowledgeDocumentId::from_uuid(
            outcome.document.id.as_uuid(),
        ))
    }
}
