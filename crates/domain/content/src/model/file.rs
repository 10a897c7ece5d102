//! Files attached to conversations and messages (seed 002 `files`): the bytes live in
//! blob storage under `storage_key`; this is their metadata. A file sent to a
//! knowledge collection remembers the RAG document it became.

use crate::{ConversationId, FileId, KnowledgeDocumentId};
use serde::Serialize;
use trellis_kernel::{Timestamp, UserId};

/// An attached file as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileAttachment {
    pub id: FileId,
    pub owner_id: UserId,
    pub conversation_id: Option<ConversationId>,
    /// The name the user uploaded it as (cleaned).
    pub filename: String,
    /// The type sniffed from the bytes.
    pub mime_type: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub checksum: String,
    /// Where the bytes are in blob storage.
    pub storage_key: String,
    /// The RAG document made from it, once sent to a collection.
    pub knowledge_document_id: Option<KnowledgeDocumentId>,
    pub created_at: Timestamp,
}

/// A file to insert (after its bytes were stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub id: FileId,
    pub owner_id: UserId,
    pub conversation_id: Option<ConversationId>,
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub checksum: String,
    pub storage_key: String,
}
