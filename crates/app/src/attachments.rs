//! The content domain's file ports over RAG's pieces: attachment bytes go to the same
//! blob storage as knowledge documents, types are sniffed by the same extractor, and
//! sending a file to a collection is an ordinary RAG upload (so the ingestion
//! workers pick it up like any other).

use async_trait::async_trait;
use std::sync::Arc;
use trellis_content::{
    ContentError, FileBlobs, FileSniffer, KnowledgeCollectionId, KnowledgeDocumentId,
    KnowledgeIntake,
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
