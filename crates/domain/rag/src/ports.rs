//! What retrieval needs from the outside world: storage of collections, documents and
//! chunks, vector and full-text indexes, embedders, blob storage, text extraction and
//! a durable job queue. Every method touching tenant data takes `&TenantCtx` first.

use crate::index::{ChunkId, CollectionId, Embedding};
use crate::{
    Chunk, CitedChunk, Collection, CollectionPatch, Document, DocumentFilter, DocumentId,
    EmbeddedChunk, EmbeddingModel, JobId, ModelChangeProgress, NewCollection, NewDocument, Result,
    SearchFilter, StatusChange,
};
use async_trait::async_trait;
use trellis_kernel::{Page, PageRequest, TenantCtx, TenantId, Timestamp};

/// Knowledge collections.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait CollectionRepo: Send + Sync + 'static {
    /// # Errors
    /// `Conflict` when the name is taken in this tenant.
    async fn insert(&self, ctx: &TenantCtx, new: NewCollection) -> Result<Collection>;
    /// # Errors
    /// `NotFound` when no such collection exists in this tenant.
    async fn get(&self, ctx: &TenantCtx, id: CollectionId) -> Result<Collection>;
    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<Collection>>;
    /// # Errors
    /// `NotFound`; `Conflict` for a taken name.
    async fn update(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        patch: CollectionPatch,
    ) -> Result<Collection>;
    /// Binds the collection to another embedding model (after a reindex finished).
    async fn set_embedding_model(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        model: EmbeddingModel,
    ) -> Result<()>;
    /// Deletes the collection with its documents and chunks.
    ///
    /// # Errors
    /// `NotFound` when no such collection exists in this tenant.
    async fn delete(&self, ctx: &TenantCtx, id: CollectionId) -> Result<()>;
}

/// Documents.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait DocumentRepo: Send + Sync + 'static {
    /// # Errors
    /// `NotFound` when the collection is not in this tenant.
    async fn insert(&self, ctx: &TenantCtx, new: NewDocument) -> Result<Document>;
    /// # Errors
    /// `NotFound` when no such document exists in this tenant.
    async fn get(&self, ctx: &TenantCtx, id: DocumentId) -> Result<Document>;
    /// The document with these bytes already in the collection, if any.
    async fn find_by_checksum(
        &self,
        ctx: &TenantCtx,
        collection: CollectionId,
        checksum: &str,
    ) -> Result<Option<Document>>;
    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &DocumentFilter,
        page: PageRequest,
    ) -> Result<Page<Document>>;
    /// # Errors
    /// `NotFound` when no such document exists in this tenant.
    async fn set_status(
        &self,
        ctx: &TenantCtx,
        id: DocumentId,
        change: StatusChange,
    ) -> Result<Document>;
    /// Deletes the document and its chunks.
    ///
    /// # Errors
    /// `NotFound` when no such document exists in this tenant.
    async fn delete(&self, ctx: &TenantCtx, id: DocumentId) -> Result<()>;
}

/// Stored chunks and their embeddings.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait ChunkRepo: Send + Sync + 'static {
    /// Atomically replaces all chunks of a document (re-processing never leaves a mix
    /// of old and new chunks, nor duplicates).
    async fn replace_for_document(
        &self,
        ctx: &TenantCtx,
        document: DocumentId,
        chunks: Vec<EmbeddedChunk>,
    ) -> Result<()>;
    /// Chunks by id, in no particular order; unknown ids are skipped.
    async fn get_many(&self, ctx: &TenantCtx, ids: &[ChunkId]) -> Result<Vec<Chunk>>;
    /// Chunks by id with their document's original name, for citations, in one
    /// transaction; in no particular order. Unknown ids, and chunks whose document is gone,
    /// are skipped.
    async fn cited(&self, ctx: &TenantCtx, ids: &[ChunkId]) -> Result<Vec<CitedChunk>>;
    /// All chunks of a document in position order.
    async fn for_document(&self, ctx: &TenantCtx, document: DocumentId) -> Result<Vec<Chunk>>;
}

/// The shadow index of a collection's embedding-model change: target-model vectors
/// stored beside the live ones (which search keeps using) until `switch` swaps them in.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait ModelChangeRepo: Send + Sync + 'static {
    /// Records that the collection moves to `target` (status running, no error). The
    /// shadow vectors of an earlier change are dropped unless it had the same target,
    /// in which case they are kept and the change resumes.
    ///
    /// # Errors
    /// `NotFound` when no such collection exists in this tenant.
    async fn begin(&self, ctx: &TenantCtx, id: CollectionId, target: EmbeddingModel) -> Result<()>;
    /// Up to `limit` chunks of the collection that have no target-model vector yet, as
    /// (chunk, content) pairs; empty when all have one or no change is running.
    async fn pending(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        limit: usize,
    ) -> Result<Vec<(ChunkId, String)>>;
    /// Stores target-model vectors for chunks (chunks deleted meanwhile are skipped).
    async fn store(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        vectors: Vec<(ChunkId, Embedding)>,
    ) -> Result<()>;
    /// Chunks embedded with the target so far, of all the collection's chunks.
    async fn progress(&self, ctx: &TenantCtx, id: CollectionId) -> Result<ModelChangeProgress>;
    /// In one step, if every chunk has a target-model vector: makes them the live
    /// vectors, binds the collection to the target and ends the change. `false` (and
    /// nothing changed) while some chunk still lacks one, e.g. a document processed
    /// meanwhile.
    async fn switch(&self, ctx: &TenantCtx, id: CollectionId) -> Result<bool>;
    /// Marks the change failed with `error`; the shadow vectors stay for a retry.
    async fn fail(&self, ctx: &TenantCtx, id: CollectionId, error: &str) -> Result<()>;
    /// Abandons the change and drops its shadow vectors.
    async fn cancel(&self, ctx: &TenantCtx, id: CollectionId) -> Result<()>;
}

/// A candidate from one index, with its score (higher is better).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub chunk: ChunkId,
    pub score: f32,
}

/// Nearest-neighbour search over chunk embeddings. Must return the true top k of the
/// tenant's matching chunks: filtering after an approximate scan loses results.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait VectorIndex: Send + Sync + 'static {
    async fn search(
        &self,
        ctx: &TenantCtx,
        query: &Embedding,
        filter: &SearchFilter,
        k: usize,
    ) -> Result<Vec<Scored>>;
}

/// Full-text search over chunk contents. `query` is in web-search syntax (see
/// [`trellis_kernel::search`]): every word is required, `or` between two words makes
/// either enough, quotes ask for the words as a phrase and `-word` excludes a word.
/// Case and punctuation do not matter.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait TextIndex: Send + Sync + 'static {
    async fn search(
        &self,
        ctx: &TenantCtx,
        query: &str,
        filter: &SearchFilter,
        k: usize,
    ) -> Result<Vec<Scored>>;
}

/// Turns texts into embeddings with one model.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    fn model(&self) -> EmbeddingModel;
    /// One L2-normalised embedding per text, in order.
    async fn embed(&self, texts: &[String]) -> anyhow::Result<Vec<Embedding>>;
}

/// The embedders this server can run, by model id.
pub trait EmbedderRegistry: Send + Sync + 'static {
    fn get(&self, model_id: &str) -> Option<std::sync::Arc<dyn Embedder>>;
    /// The model new collections get when they name none.
    fn default_model(&self) -> EmbeddingModel;
    fn models(&self) -> Vec<EmbeddingModel>;
}

/// Object storage for uploaded files (local disk, S3-compatible).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()>;
    async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>>;
    /// Idempotent: deleting a missing blob succeeds.
    async fn delete(&self, key: &str) -> anyhow::Result<()>;
}

/// Text extracted from a file, with page starts where the format has pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The sniffed MIME type.
    pub mime_type: String,
    pub text: String,
    /// Byte offsets in `text` where page 1, 2, ... begin (empty if unpaged).
    pub page_starts: Vec<u32>,
}

/// Why a file yielded no text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("unsupported file type: {0}")]
    Unsupported(String),
    #[error("the file is corrupt or unreadable: {0}")]
    Corrupt(String),
    #[error("the file contains no extractable text")]
    Empty,
}

/// Sniffs a file's type from its bytes and extracts its text.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait TextExtractor: Send + Sync + 'static {
    /// The sniffed MIME type, or `None` if unsupported.
    fn sniff(&self, bytes: &[u8], filename: &str) -> Option<String>;
    /// # Errors
    /// `Unsupported`, `Corrupt` or `Empty`; never panics on hostile input.
    fn extract(&self, bytes: &[u8], filename: &str)
    -> std::result::Result<Extracted, ExtractError>;
}

/// Where hashing uploads, extraction and chunking run (the kernel's port).
pub use trellis_kernel::{BlockingRunner, RunInline};

/// What a background job does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Extract, chunk, embed and index one document.
    ProcessDocument(DocumentId),
    /// Re-embed a collection's chunks with the target of its model change, then switch.
    ChangeModel(CollectionId),
}

/// A job taken from the queue, leased to one worker until `lease_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub kind: JobKind,
    /// 1 on the first try.
    pub attempt: u32,
    pub lease_until: Timestamp,
}

/// A durable queue: jobs survive restarts, a worker that dies loses its lease and the
/// job is handed out again, and failures retry with backoff up to a maximum.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    async fn enqueue(&self, ctx: &TenantCtx, kind: JobKind) -> Result<JobId>;
    /// Takes the oldest due job whose lease is free (any tenant), leasing it for
    /// `lease`. Trusted worker code only.
    async fn claim(&self, lease: chrono::Duration) -> Result<Option<ClaimedJob>>;
    /// Pushes a running job's lease `lease` into the future, so a long document is not
    /// taken over while its worker is alive. `false` when the claim was already lost
    /// (the lease ran out and another worker holds the job).
    async fn extend(&self, job: &ClaimedJob, lease: chrono::Duration) -> Result<bool>;
    async fn complete(&self, job: &ClaimedJob) -> Result<()>;
    /// Schedules another try at `retry_at`.
    async fn retry(&self, job: &ClaimedJob, error: &str, retry_at: Timestamp) -> Result<()>;
    /// Gives up on the job for good.
    async fn fail(&self, job: &ClaimedJob, error: &str) -> Result<()>;
}
