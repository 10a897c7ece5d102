//! What the content domain needs from the outside world: storage for agents, tools,
//! conversations, messages, memories, files and usage; the tenant's quota and model
//! catalogue; a chat model; retrieval over knowledge collections; and a way to run
//! the task that finishes an answer after the client has gone. Every method touching
//! tenant data takes `&TenantCtx` first.

use crate::{
    Agent, AgentConfig, AgentFilter, AgentId, AgentVersion, ChatRequest, ChatStream, Completion,
    Conversation, ConversationFilter, ConversationId, ConversationPatch, FileAttachment, FileId,
    KnowledgeCollectionId, KnowledgeDocumentId, LlmModel, Memory, MemoryId, MemoryPatch, Message,
    MessageHit, MessageId, NewAgent, NewConversation, NewFile, NewMemory, NewMessage, NewTool,
    Passage, Quota, Recorded, Result, ScoredMemory, ToolConfig, ToolId, ToolPatch, UsageEvent,
    UsageScope,
};
use async_trait::async_trait;
use futures::future::BoxFuture;
use trellis_kernel::{Page, PageRequest, PlatformCtx, TenantCtx, TenantId, Timestamp, UserId};
use trellis_tenancy::LlmProvider;

/// Agents and their versions.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait AgentRepo: Send + Sync + 'static {
    /// Stores the agent as version 1 (and that configuration as its first version).
    ///
    /// # Errors
    /// `Conflict` when the name is taken in this tenant.
    async fn insert(&self, ctx: &TenantCtx, new: NewAgent) -> Result<Agent>;
    /// # Errors
    /// `NotFound` when no such agent exists in this tenant.
    async fn get(&self, ctx: &TenantCtx, id: AgentId) -> Result<Agent>;
    /// The agent with exactly this name, if any.
    async fn find_by_name(&self, ctx: &TenantCtx, name: &str) -> Result<Option<Agent>>;
    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &AgentFilter,
        page: PageRequest,
    ) -> Result<Page<Agent>>;
    /// In one step: replaces the configuration, bumps the version to
    /// `expected_version + 1` and keeps the new configuration as that version.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when the agent is no longer at `expected_version`
    /// (someone else changed it) or the new name is taken.
    async fn update(
        &self,
        ctx: &TenantCtx,
        id: AgentId,
        expected_version: u32,
        config: AgentConfig,
        by: Option<UserId>,
    ) -> Result<Agent>;
    /// Every saved version, oldest first (the last is the current configuration).
    ///
    /// # Errors
    /// `NotFound` when no such agent exists in this tenant.
    async fn versions(&self, ctx: &TenantCtx, id: AgentId) -> Result<Vec<AgentVersion>>;
    /// Deletes the agent and its versions. Conversations keep their (now dangling)
    /// `agent_id`.
    ///
    /// # Errors
    /// `NotFound` when no such agent exists in this tenant.
    async fn delete(&self, ctx: &TenantCtx, id: AgentId) -> Result<()>;
}

/// Tool configurations.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait ToolRepo: Send + Sync + 'static {
    /// # Errors
    /// `Conflict` when the name is taken in this tenant.
    async fn insert(&self, ctx: &TenantCtx, new: NewTool) -> Result<ToolConfig>;
    /// # Errors
    /// `NotFound` when no such tool exists in this tenant.
    async fn get(&self, ctx: &TenantCtx, id: ToolId) -> Result<ToolConfig>;
    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<ToolConfig>>;
    /// # Errors
    /// `NotFound`; `Conflict` for a taken name.
    async fn update(&self, ctx: &TenantCtx, id: ToolId, patch: ToolPatch) -> Result<ToolConfig>;
    /// # Errors
    /// `NotFound` when no such tool exists in this tenant.
    async fn delete(&self, ctx: &TenantCtx, id: ToolId) -> Result<()>;
}

/// Conversations.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait ConversationRepo: Send + Sync + 'static {
    async fn insert(&self, ctx: &TenantCtx, new: NewConversation) -> Result<Conversation>;
    /// # Errors
    /// `NotFound` when no such conversation exists in this tenant.
    async fn get(&self, ctx: &TenantCtx, id: ConversationId) -> Result<Conversation>;
    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &ConversationFilter,
        page: PageRequest,
    ) -> Result<Page<Conversation>>;
    /// # Errors
    /// `NotFound` when no such conversation exists in this tenant.
    async fn update(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation>;
    /// Deletes the conversation and all its messages.
    ///
    /// # Errors
    /// `NotFound` when no such conversation exists in this tenant.
    async fn delete(&self, ctx: &TenantCtx, id: ConversationId) -> Result<()>;
    /// The conversation and every one of its messages (as
    /// [`MessageRepo::for_conversation`] orders them), read together in one unit of
    /// work so that they agree with each other: what opening a conversation shows.
    ///
    /// # Errors
    /// `NotFound` when no such conversation exists in this tenant.
    async fn with_messages(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
    ) -> Result<(Conversation, Vec<Message>)>;
    /// The conversation with everything answering in it reads first: its messages
    /// (as [`MessageRepo::for_conversation`] orders them) and its agent (`None` when it
    /// has none, or the agent is gone), read together in one unit of work so that they
    /// agree with each other.
    ///
    /// # Errors
    /// `NotFound` when no such conversation exists in this tenant.
    async fn thread(&self, ctx: &TenantCtx, id: ConversationId) -> Result<Thread>;
}

/// A conversation as answering reads it: see [`ConversationRepo::thread`].
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub conversation: Conversation,
    pub messages: Vec<Message>,
    pub agent: Option<Agent>,
}

/// Messages. Inserting one also sets its conversation's `last_message_at`, in the
/// same unit of work.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait MessageRepo: Send + Sync + 'static {
    /// # Errors
    /// `NotFound` when the conversation is not in this tenant, or the parent is not a
    /// message of the same conversation.
    async fn insert(&self, ctx: &TenantCtx, new: NewMessage) -> Result<Message>;
    /// Does the work of `insert` now but leaves the message uncommitted: it becomes
    /// visible when the returned [`PendingMessage`] is committed, and is never stored
    /// if that is dropped instead. An answer writes its question this way while it
    /// still reads, so only the commit waits for the decision to go ahead.
    ///
    /// # Errors
    /// As `insert`. An adapter may report them from `commit` instead.
    async fn prepare_insert(&self, ctx: &TenantCtx, new: NewMessage) -> Result<PendingMessage>;
    /// All or nothing, in order (a message's parent may be an earlier one of the
    /// batch). Used to fill a forked conversation.
    ///
    /// # Errors
    /// As `insert`, for any message; then nothing was stored.
    async fn insert_many(&self, ctx: &TenantCtx, new: Vec<NewMessage>) -> Result<Vec<Message>>;
    /// # Errors
    /// `NotFound` when no such message exists in this tenant.
    async fn get(&self, ctx: &TenantCtx, id: MessageId) -> Result<Message>;
    /// Every message of the conversation (all branches), oldest first.
    async fn for_conversation(
        &self,
        ctx: &TenantCtx,
        conversation: ConversationId,
    ) -> Result<Vec<Message>>;
    /// Full-text search over message contents, best first, at most `limit` hits.
    /// `owner`: only conversations of this user; `None`: all of the tenant's.
    async fn search(
        &self,
        ctx: &TenantCtx,
        owner: Option<UserId>,
        query: &str,
        limit: usize,
    ) -> Result<Vec<MessageHit>>;
}

/// A message written but not yet committed (see [`MessageRepo::prepare_insert`]).
/// Dropping it without committing stores nothing.
pub struct PendingMessage {
    commit: BoxFuture<'static, Result<Message>>,
}

impl PendingMessage {
    /// `commit` makes the message visible and returns it as stored; it must store
    /// nothing if it is dropped before it completes.
    pub fn new(commit: impl Future<Output = Result<Message>> + Send + 'static) -> Self {
        Self {
            commit: Box::pin(commit),
        }
    }

    /// Makes the message visible.
    ///
    /// # Errors
    /// When the commit fails; then nothing was stored.
    pub async fn commit(self) -> Result<Message> {
        self.commit.await
    }
}

impl std::fmt::Debug for PendingMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingMessage")
    }
}

/// Memories.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait MemoryRepo: Send + Sync + 'static {
    /// # Errors
    /// `Conflict` when the owner already has a memory with this key.
    async fn insert(&self, ctx: &TenantCtx, new: NewMemory) -> Result<Memory>;
    /// # Errors
    /// `NotFound` when no such memory exists in this tenant.
    async fn get(&self, ctx: &TenantCtx, id: MemoryId) -> Result<Memory>;
    /// One user's memories, oldest first.
    async fn list(&self, ctx: &TenantCtx, owner: UserId, page: PageRequest)
    -> Result<Page<Memory>>;
    /// # Errors
    /// `NotFound`; `Conflict` when the new key is taken.
    async fn update(&self, ctx: &TenantCtx, id: MemoryId, patch: MemoryPatch) -> Result<Memory>;
    /// # Errors
    /// `NotFound` when no such memory exists in this tenant.
    async fn delete(&self, ctx: &TenantCtx, id: MemoryId) -> Result<()>;
    /// Full-text search over one user's memories (key, value, category), best first.
    async fn search(
        &self,
        ctx: &TenantCtx,
        owner: UserId,
        query: &str,
        limit: usize,
    ) -> Result<Vec<ScoredMemory>>;
}

/// Metadata of attached files (the bytes are in blob storage).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait FileRepo: Send + Sync + 'static {
    async fn insert(&self, ctx: &TenantCtx, new: NewFile) -> Result<FileAttachment>;
    /// # Errors
    /// `NotFound` when no such file exists in this tenant.
    async fn get(&self, ctx: &TenantCtx, id: FileId) -> Result<FileAttachment>;
    /// The files of a conversation, oldest first.
    async fn for_conversation(
        &self,
        ctx: &TenantCtx,
        conversation: ConversationId,
    ) -> Result<Vec<FileAttachment>>;
    /// Records the knowledge document the file became when it was sent to a
    /// collection.
    ///
    /// # Errors
    /// `NotFound` when no such file (or, where storage can tell, no such document)
    /// exists in this tenant.
    async fn set_knowledge_document(
        &self,
        ctx: &TenantCtx,
        id: FileId,
        document: KnowledgeDocumentId,
    ) -> Result<FileAttachment>;
    /// # Errors
    /// `NotFound` when no such file exists in this tenant.
    async fn delete(&self, ctx: &TenantCtx, id: FileId) -> Result<()>;
}

/// Where attached files' bytes are kept (an adapter wraps the same blob storage RAG
/// documents use). Keys are chosen by the domain and start with the tenant id.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait FileBlobs: Send + Sync + 'static {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()>;
    /// # Errors
    /// `NotFound` or `Unexpected` when the bytes are gone.
    async fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Idempotent: deleting missing bytes succeeds.
    async fn delete(&self, key: &str) -> Result<()>;
}

/// Tells a file's type from its bytes (never from what the client claimed).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait FileSniffer: Send + Sync + 'static {
    /// The MIME type, or `None` for a type we do not accept.
    fn sniff(&self, bytes: &[u8], filename: &str) -> Option<String>;
}

/// Reads an attached file's text for a prompt (an adapter fetches the bytes and runs
/// the knowledge base's extractor, off the async threads).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait AttachmentReader: Send + Sync + 'static {
    /// At most `max_chars` characters of the file's text; `None` when it has no text
    /// to give (an unreadable, corrupt or empty file).
    ///
    /// # Errors
    /// When the stored bytes cannot be read.
    async fn text(
        &self,
        ctx: &TenantCtx,
        file: &FileAttachment,
        max_chars: usize,
    ) -> Result<Option<String>>;
    /// The file was deleted: drop whatever this reader keeps of its text, so that
    /// none of it outlives the file here.
    fn forget(&self, ctx: &TenantCtx, file: FileId);
}

/// Hands a file to a knowledge collection as a document upload (an adapter wraps the
/// RAG service; the document is then ingested like any upload).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait KnowledgeIntake: Send + Sync + 'static {
    /// The document the bytes became (an existing one when the collection already
    /// holds the same bytes).
    ///
    /// # Errors
    /// `NotFound` for a collection not in this tenant; `Forbidden` without the
    /// permission to add knowledge; `TooLarge`; `Unsupported`.
    async fn add_document(
        &self,
        ctx: &TenantCtx,
        collection: KnowledgeCollectionId,
        filename: &str,
        bytes: Vec<u8>,
    ) -> Result<KnowledgeDocumentId>;
}

/// Token metering.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait UsageMeter: Send + Sync + 'static {
    /// Stores the event unless one with its idempotency key exists in this tenant.
    async fn record(&self, ctx: &TenantCtx, event: UsageEvent) -> Result<Recorded>;
    /// Tokens (prompt plus completion) of events in `[from, until)` for the scope.
    async fn total_tokens(
        &self,
        ctx: &TenantCtx,
        scope: UsageScope,
        from: Timestamp,
        until: Timestamp,
    ) -> Result<u64>;
}

/// The tenant's token budgets (from its plan; set by the platform, not the tenant).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait QuotaSource: Send + Sync + 'static {
    async fn quota(&self, ctx: &TenantCtx) -> Result<Quota>;
}

/// Setting tenants' token budgets: platform work. A tenant reads its own budgets
/// through [`QuotaSource`] but can never change them.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait QuotaAdmin: Send + Sync + 'static {
    /// The tenant's budgets; unlimited when none were ever set.
    async fn quota_of(&self, ctx: &PlatformCtx, tenant: TenantId) -> Result<Quota>;
    /// Replaces the tenant's budgets (`None` budgets become unlimited).
    async fn replace_quota(&self, ctx: &PlatformCtx, tenant: TenantId, quota: Quota) -> Result<()>;
}

/// The model catalogue, as this tenant may use it (adapters drop providers the
/// tenant's configuration does not allow).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait LlmCatalog: Send + Sync + 'static {
    async fn list(&self, ctx: &TenantCtx) -> Result<Vec<LlmModel>>;
    /// # Errors
    /// `ModelUnavailable` when the model is unknown or not allowed for the tenant.
    async fn get(&self, ctx: &TenantCtx, provider: LlmProvider, model: &str) -> Result<LlmModel>;
}

/// A chat model: OpenAI-compatible, Anthropic, or a fake. The adapter picks the
/// tenant's own API key through `ctx`, applies timeouts and retries, and reports every
/// provider failure as `ContentError::Provider` (before streaming) or
/// `ChatChunk::Error` (during).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait ChatModel: Send + Sync + 'static {
    /// A whole answer at once.
    async fn complete(&self, ctx: &TenantCtx, request: ChatRequest) -> Result<Completion>;
    /// The answer as it is written. Resolves once the provider accepted the request.
    async fn stream(&self, ctx: &TenantCtx, request: ChatRequest) -> Result<ChatStream>;
}

/// Retrieval over the tenant's knowledge collections (an adapter wraps the RAG
/// domain's cited search).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait Retriever: Send + Sync + 'static {
    /// The best `k` passages for `query` from these collections, best first.
    ///
    /// # Errors
    /// `NotFound` when a collection is not in this tenant.
    async fn retrieve(
        &self,
        ctx: &TenantCtx,
        collections: &[KnowledgeCollectionId],
        query: &str,
        k: usize,
    ) -> Result<Vec<Passage>>;
}

/// Runs a task to completion in the background, independent of whoever started it.
/// The answer use case uses it so that storing the answer does not depend on the
/// client staying connected; with Tokio it is `tokio::spawn`.
pub trait TaskSpawner: Send + Sync + 'static {
    fn spawn(&self, task: BoxFuture<'static, ()>);
}
