//! Identifiers of the content domain, plus typed references to the RAG domain's
//! collections and documents (same UUIDs, own types, so this crate need not depend on
//! `trellis-rag`; the retriever adapter converts with `from_uuid`).

use trellis_kernel::define_id;

define_id!(
    /// An AI agent (seeds 000, 002, 004).
    AgentId
);
define_id!(
    /// A configured tool instance (seed 004 `tool_configs`).
    ToolId
);
define_id!(
    /// A conversation (seed 002).
    ConversationId
);
define_id!(
    /// One message of a conversation's tree.
    MessageId
);
define_id!(
    /// A remembered fact about a user (seed 002 memories).
    MemoryId
);
define_id!(
    /// A file attached to a conversation or message.
    FileId
);
define_id!(
    /// One metered use of a model.
    UsageEventId
);
define_id!(
    /// A knowledge collection of the RAG domain (`trellis_rag::index::CollectionId`).
    KnowledgeCollectionId
);
define_id!(
    /// A document of the RAG domain (`trellis_rag::DocumentId`).
    KnowledgeDocumentId
);
