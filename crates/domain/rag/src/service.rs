//! RAG use cases: managing collections, uploading documents, the ingestion job that
//! extracts, chunks, embeds and indexes them, and cited search.

use crate::chunker::chunk_text;
use crate::fusion::reciprocal_rank_fusion;
use crate::index::{ChunkId, CollectionId};
use crate::{
    BlobStore, BlockingRunner, Chunk, ChunkRepo, ChunkingSettings, Citation, CitedChunk,
    ClaimedJob, Collection, CollectionPatch, CollectionRepo, Document, DocumentFilter, DocumentId,
    DocumentRepo, DocumentStatus, EmbeddedChunk, EmbedderRegistry, EmbeddingModel, ExtractError,
    JobKind, JobQueue, Metadata, ModelChangeProgress, ModelChangeRepo, ModelChangeStatus,
    NewCollection, NewDocument, RagError, Result, Scored, SearchFilter, SearchHit, SearchMode,
    SearchQuery, SourceType, StatusChange, TextExtractor, TextIndex, VectorIndex,
    validate_metadata,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use trellis_kernel::{
    BlockingFailure, Clock, InvalidValue, Page, PageRequest, Permission, TenantCtx, inspect_upload,
    run_blocking,
};

/// Limits and retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RagConfig {
    /// Uploads above this are refused (default 25 MiB).
    pub max_upload_bytes: u64,
    /// After this many failed tries a document ends in `error`.
    pub max_attempts: u32,
    /// Texts per embedder call.
    pub embed_batch: usize,
    /// Candidates each retriever contributes to a hybrid search, per result wanted.
    pub hybrid_candidates_per_result: usize,
}

impl Default for RagConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 25 * 1024 * 1024,
            max_attempts: 5,
            embed_batch: 32,
            hybrid_candidates_per_result: 4,
        }
    }
}

/// The ports RAG works through.
pub struct RagPorts {
    pub collections: Arc<dyn CollectionRepo>,
    pub documents: Arc<dyn DocumentRepo>,
    pub chunks: Arc<dyn ChunkRepo>,
    pub vectors: Arc<dyn VectorIndex>,
    pub text: Arc<dyn TextIndex>,
    pub embedders: Arc<dyn EmbedderRegistry>,
    pub blobs: Arc<dyn BlobStore>,
    pub extractor: Arc<dyn TextExtractor>,
    /// Where hashing uploads, extraction and chunking run, off the threads that serve
    /// requests.
    pub blocking: Arc<dyn BlockingRunner>,
    pub jobs: Arc<dyn JobQueue>,
    pub model_changes: Arc<dyn ModelChangeRepo>,
    pub clock: Arc<dyn Clock>,
}

/// RAG use cases.
#[derive(Clone)]
pub struct RagService {
    collections: Arc<dyn CollectionRepo>,
    documents: Arc<dyn DocumentRepo>,
    chunks: Arc<dyn ChunkRepo>,
    vectors: Arc<dyn VectorIndex>,
    text: Arc<dyn TextIndex>,
    embedders: Arc<dyn EmbedderRegistry>,
    blobs: Arc<dyn BlobStore>,
    extractor: Arc<dyn TextExtractor>,
    blocking: Arc<dyn BlockingRunner>,
    jobs: Arc<dyn JobQueue>,
    model_changes: Arc<dyn ModelChangeRepo>,
    clock: Arc<dyn Clock>,
    config: RagConfig,
}

/// A collection to create.
#[derive(Debug, Clone)]
pub struct CreateCollection {
    pub name: String,
    pub description: Option<String>,
    pub agent_id: Option<uuid::Uuid>,
    pub source_type: SourceType,
    pub chunking: ChunkingSettings,
    /// `None`: the server's default model.
    pub embedding_model: Option<String>,
}

/// A file to add to a collection.
#[derive(Debug, Clone)]
pub struct Upload {
    pub original_name: String,
    pub bytes: Vec<u8>,
    pub metadata: Metadata,
}

/// What an upload did.
#[derive(Debug, Clone)]
pub struct UploadOutcome {
    pub document: Document,
    /// True when the same bytes were already in the collection: nothing new was stored.
    pub duplicate: bool,
}

fn require(ctx: &TenantCtx, p: Permission) -> Result<()> {
    if ctx.can(p) {
        Ok(())
    } else {
        Err(RagError::Forbidden)
    }
}

fn text_field(field: &'static str, s: &str, max: usize) -> Result<String> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(InvalidValue::new(field, format!("must be 1 to {max} characters")).into());
    }
    Ok(t.to_owned())
}

/// A file name safe to show and store: the last path component, control characters
/// dropped, at most 255 characters.
fn clean_filename(name: &str) -> Result<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let cleaned = cleaned.trim().to_owned();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return Err(InvalidValue::new("file", "needs a file name").into());
    }
    Ok(cleaned)
}

impl RagService {
    #[must_use]
    pub fn new(ports: RagPorts, config: RagConfig) -> Self {
        Self {
            collections: ports.collections,
            documents: ports.documents,
            chunks: ports.chunks,
            vectors: ports.vectors,
            text: ports.text,
            embedders: ports.embedders,
            blobs: ports.blobs,
            extractor: ports.extractor,
            blocking: ports.blocking,
            jobs: ports.jobs,
            model_changes: ports.model_changes,
            clock: ports.clock,
            config,
        }
    }

    /// The ingestion queue (workers claim from it and renew their leases).
    #[must_use]
    pub fn jobs(&self) -> &Arc<dyn JobQueue> {
        &self.jobs
    }

    #[must_use]
    pub fn config(&self) -> RagConfig {
        self.config
    }

    // ----- collections ----------------------------------------------------------------

    /// # Errors
    /// `Forbidden` without `knowledge_manage`; `ModelUnavailable` for an embedding
    /// model this server cannot run; `Conflict` for a taken name.
    pub async fn create_collection(
        &self,
        ctx: &TenantCtx,
        cmd: CreateCollection,
    ) -> Result<Collection> {
        require(ctx, Permission::KnowledgeManage)?;
        let name = text_field("name", &cmd.name, 200)?;
        let description = cmd
            .description
            .as_deref()
            .map(|d| text_field("description", d, 2000))
            .transpose()?;
        let model = match cmd.embedding_model {
            None => self.embedders.default_model(),
            Some(id) => self
                .embedders
                .get(&id)
                .map(|e| e.model())
                .ok_or(RagError::ModelUnavailable(id))?,
        };
        self.collections
            .insert(
                ctx,
                NewCollection {
                    id: CollectionId::new(),
                    name,
                    description,
                    agent_id: cmd.agent_id,
                    source_type: cmd.source_type,
                    chunking: cmd.chunking,
                    embedding_model: model,
                    created_by: ctx.user_id(),
                },
            )
            .await
    }

    /// # Errors
    /// `Forbidden` without `knowledge_read`.
    pub async fn list_collections(
        &self,
        ctx: &TenantCtx,
        page: PageRequest,
    ) -> Result<Page<Collection>> {
        require(ctx, Permission::KnowledgeRead)?;
        self.collections.list(ctx, page).await
    }

    /// # Errors
    /// `NotFound` outside this tenant.
    pub async fn get_collection(&self, ctx: &TenantCtx, id: CollectionId) -> Result<Collection> {
        require(ctx, Permission::KnowledgeRead)?;
        self.collections.get(ctx, id).await
    }

    /// # Errors
    /// `Forbidden`; `NotFound`; `Invalid`.
    pub async fn update_collection(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        mut patch: CollectionPatch,
    ) -> Result<Collection> {
        require(ctx, Permission::KnowledgeManage)?;
        if let Some(n) = &patch.name {
            patch.name = Some(text_field("name", n, 200)?);
        }
        if let Some(Some(d)) = &patch.description {
            patch.description = Some(Some(text_field("description", d, 2000)?));
        }
        self.collections.update(ctx, id, patch).await
    }

    /// Deletes the collection, its documents, chunks and stored files.
    ///
    /// # Errors
    /// `Forbidden`; `NotFound`.
    pub async fn delete_collection(&self, ctx: &TenantCtx, id: CollectionId) -> Result<()> {
        require(ctx, Permission::KnowledgeManage)?;
        self.collections.get(ctx, id).await?;
        let keys = self.storage_keys(ctx, Some(id)).await?;
        self.collections.delete(ctx, id).await?;
        for key in keys {
            // The rows are gone; a blob left behind is only wasted space, never a leak.
            if let Err(e) = self.blobs.delete(&key).await {
                tracing::warn!(blob = %key, error = %format!("{e:#}"), "could not delete a stored file");
            }
        }
        Ok(())
    }

    async fn storage_keys(
        &self,
        ctx: &TenantCtx,
        collection: Option<CollectionId>,
    ) -> Result<Vec<String>> {
        let filter = DocumentFilter {
            collection,
            status: None,
        };
        let mut keys = Vec::new();
        let mut page = PageRequest::new(Some(trellis_kernel::page::MAX_PAGE_SIZE), None)?;
        loop {
            let batch = self.documents.list(ctx, &filter, page).await?;
            keys.extend(batch.items.into_iter().map(|d| d.storage_key));
            match batch.next_cursor {
                Some(c) => page = PageRequest::new(Some(page.limit()), Some(&c))?,
                None => return Ok(keys),
            }
        }
    }

    // ----- documents ------------------------------------------------------------------

    /// Stores a file and queues it for processing. The type is sniffed from the bytes;
    /// the same bytes uploaded again into the collection return the existing document.
    ///
    /// # Errors
    /// `Forbidden`; `NotFound` for another tenant's collection; `TooLarge`;
    /// `Unsupported` for a type we cannot extract; `Unexpected` when storage fails or
    /// reading the bytes off the request's thread did not finish (shutdown).
    pub async fn upload(
        &self,
        ctx: &TenantCtx,
        collection: CollectionId,
        upload: Upload,
    ) -> Result<UploadOutcome> {
        require(ctx, Permission::KnowledgeManage)?;
        let len = upload.bytes.len() as u64;
        if len > self.config.max_upload_bytes {
            return Err(RagError::TooLarge {
                limit_bytes: self.config.max_upload_bytes,
            });
        }
        if upload.bytes.is_empty() {
            return Err(InvalidValue::new("file", "is empty").into());
        }
        validate_metadata(&upload.metadata)?;
        let original_name = clean_filename(&upload.original_name)?;
        let coll = self.collections.get(ctx, collection).await?;
        let extractor = self.extractor.clone();
        let name = original_name.clone();
        let (bytes, mime_type, checksum) =
            inspect_upload(self.blocking.as_ref(), upload.bytes, move |bytes| {
                extractor.sniff(bytes, &name)
            })
            .await
            .map_err(|e| RagError::Unexpected(anyhow::anyhow!("reading the upload: {e}")))?;
        let mime_type = mime_type.ok_or_else(|| RagError::Unsupported(original_name.clone()))?;
        if let Some(existing) = self
            .documents
            .find_by_checksum(ctx, coll.id, &checksum)
            .await?
        {
            return Ok(UploadOutcome {
                document: existing,
                duplicate: true,
            });
        }
        let id = DocumentId::new();
        let storage_key = format!("{}/{}/{}", ctx.tenant_id(), coll.id, id);
        self.blobs.put(&storage_key, bytes).await?;
        let inserted = self
            .documents
            .insert(
                ctx,
                NewDocument {
                    id,
                    collection_id: coll.id,
                    filename: id.to_string(),
                    original_name,
                    mime_type,
                    size_bytes: len,
                    checksum,
                    storage_key: storage_key.clone(),
                    source_type: SourceType::Upload,
                    source_id: None,
                    metadata: upload.metadata,
                    uploaded_by: ctx.user_id(),
                },
            )
            .await;
        let document = match inserted {
            Ok(d) => d,
            Err(e) => {
                let _ = self.blobs.delete(&storage_key).await;
                return Err(e);
            }
        };
        self.jobs
            .enqueue(ctx, JobKind::ProcessDocument(document.id))
            .await?;
        Ok(UploadOutcome {
            document,
            duplicate: false,
        })
    }

    /// # Errors
    /// `Forbidden` without `knowledge_read`.
    pub async fn list_documents(
        &self,
        ctx: &TenantCtx,
        filter: &DocumentFilter,
        page: PageRequest,
    ) -> Result<Page<Document>> {
        require(ctx, Permission::KnowledgeRead)?;
        self.documents.list(ctx, filter, page).await
    }

    /// # Errors
    /// `NotFound` outside this tenant.
    pub async fn get_document(&self, ctx: &TenantCtx, id: DocumentId) -> Result<Document> {
        require(ctx, Permission::KnowledgeRead)?;
        self.documents.get(ctx, id).await
    }

    /// The document's chunks, in order.
    ///
    /// # Errors
    /// `NotFound` outside this tenant.
    pub async fn document_chunks(&self, ctx: &TenantCtx, id: DocumentId) -> Result<Vec<Chunk>> {
        require(ctx, Permission::KnowledgeRead)?;
        self.documents.get(ctx, id).await?;
        self.chunks.for_document(ctx, id).await
    }

    /// Deletes a document, its chunks and its file.
    ///
    /// # Errors
    /// `Forbidden`; `NotFound`.
    pub async fn delete_document(&self, ctx: &TenantCtx, id: DocumentId) -> Result<()> {
        require(ctx, Permission::KnowledgeManage)?;
        let doc = self.documents.get(ctx, id).await?;
        self.documents.delete(ctx, id).await?;
        if let Err(e) = self.blobs.delete(&doc.storage_key).await {
            tracing::warn!(blob = %doc.storage_key, error = %format!("{e:#}"), "could not delete a stored file");
        }
        Ok(())
    }

    /// Processes a document again (e.g. after chunking settings changed).
    ///
    /// # Errors
    /// `Forbidden`; `NotFound`.
    pub async fn reindex_document(&self, ctx: &TenantCtx, id: DocumentId) -> Result<Document> {
        require(ctx, Permission::KnowledgeManage)?;
        self.documents.get(ctx, id).await?;
        let doc = self
            .documents
            .set_status(
                ctx,
                id,
                StatusChange {
                    status: DocumentStatus::Uploaded,
                    error: None,
                    processed_at: None,
                    chunk_count: None,
                },
            )
            .await?;
        self.jobs.enqueue(ctx, JobKind::ProcessDocument(id)).await?;
        Ok(doc)
    }

    /// Queues every document of a collection for processing again; returns how many.
    ///
    /// # Errors
    /// `Forbidden`; `NotFound`.
    pub async fn reindex_collection(&self, ctx: &TenantCtx, id: CollectionId) -> Result<u64> {
        require(ctx, Permission::KnowledgeManage)?;
        self.collections.get(ctx, id).await?;
        let filter = DocumentFilter {
            collection: Some(id),
            status: None,
        };
        let mut page = PageRequest::new(Some(trellis_kernel::page::MAX_PAGE_SIZE), None)?;
        let mut n = 0;
        loop {
            let batch = self.documents.list(ctx, &filter, page).await?;
            for d in &batch.items {
                self.reindex_document(ctx, d.id).await?;
                n += 1;
            }
            match batch.next_cursor {
                Some(c) => page = PageRequest::new(Some(page.limit()), Some(&c))?,
                None => return Ok(n),
            }
        }
    }

    // ----- changing the embedding model ------------------------------------------------

    /// The embedding models this server can run (for choosing a collection's model).
    #[must_use]
    pub fn embedding_models(&self) -> Vec<EmbeddingModel> {
        let mut models = self.embedders.models();
        models.sort_by(|a, b| a.id.cmp(&b.id));
        models
    }

    /// Starts moving a collection to another embedding model: its chunks are embedded
    /// with `model` into a shadow index by a background job while search keeps using the
    /// current model, then the collection switches over in one step. Starting again
    /// while a change runs or after one failed retargets it (a failed change resumes
    /// where it stopped when the target is the same).
    ///
    /// # Errors
    /// `Forbidden`; `NotFound`; `ModelUnavailable` for a model this server cannot run;
    /// `Invalid` when the collection already uses `model` and no change is pending.
    pub async fn change_embedding_model(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        model: &str,
    ) -> Result<(Collection, ModelChangeProgress)> {
        require(ctx, Permission::KnowledgeManage)?;
        let coll = self.collections.get(ctx, id).await?;
        let target = self
            .embedders
            .get(model.trim())
            .map(|e| e.model())
            .ok_or_else(|| RagError::ModelUnavailable(model.trim().to_owned()))?;
        if target == coll.embedding_model {
            if coll.model_change.is_some() {
                // Going back to the current model is cancelling the change.
                self.model_changes.cancel(ctx, id).await?;
            } else {
                return Err(InvalidValue::new(
                    "model",
                    "is already the collection's embedding model",
                )
                .into());
            }
        } else {
            let running = coll
                .model_change
                .as_ref()
                .is_some_and(|c| c.target == target && c.status == ModelChangeStatus::Running);
            if !running {
                // `begin` keeps the shadow vectors when a failed change is retried with
                // the same target, so it resumes where it stopped.
                self.model_changes.begin(ctx, id, target).await?;
                self.jobs.enqueue(ctx, JobKind::ChangeModel(id)).await?;
            }
        }
        let coll = self.collections.get(ctx, id).await?;
        let progress = self.model_changes.progress(ctx, id).await?;
        Ok((coll, progress))
    }

    /// The collection with how far its model change has come.
    ///
    /// # Errors
    /// `Forbidden`; `NotFound`.
    pub async fn model_change_progress(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
    ) -> Result<(Collection, ModelChangeProgress)> {
        require(ctx, Permission::KnowledgeRead)?;
        let coll = self.collections.get(ctx, id).await?;
        let progress = self.model_changes.progress(ctx, id).await?;
        Ok((coll, progress))
    }

    /// Abandons a model change; search stays on the current model.
    ///
    /// # Errors
    /// `Forbidden`; `NotFound`.
    pub async fn cancel_model_change(&self, ctx: &TenantCtx, id: CollectionId) -> Result<()> {
        require(ctx, Permission::KnowledgeManage)?;
        self.collections.get(ctx, id).await?;
        self.model_changes.cancel(ctx, id).await
    }

    /// The job's work: embeds chunks still lacking a target vector in batches, then
    /// switches. Chunks that appear meanwhile (documents processed during the change)
    /// are picked up by the next round, so the switch never leaves one behind.
    async fn run_model_change(&self, ctx: &TenantCtx, id: CollectionId) -> Result<()> {
        let batch = self.config.embed_batch.max(1);
        loop {
            let coll = self.collections.get(ctx, id).await?;
            let Some(change) = coll
                .model_change
                .filter(|c| c.status == ModelChangeStatus::Running)
            else {
                return Ok(()); // cancelled or finished meanwhile
            };
            let embedder = self
                .embedders
                .get(&change.target.id)
                .ok_or_else(|| RagError::ModelUnavailable(change.target.id.clone()))?;
            let pending = self.model_changes.pending(ctx, id, batch * 4).await?;
            if pending.is_empty() {
                if self.model_changes.switch(ctx, id).await? {
                    return Ok(());
                }
                continue;
            }
            for group in pending.chunks(batch) {
                let texts: Vec<String> = group.iter().map(|(_, t)| t.clone()).collect();
                let vectors = embedder.embed(&texts).await?;
                if vectors.len() != texts.len() {
                    return Err(anyhow::anyhow!(
                        "embedder returned {} vectors for {} texts",
                        vectors.len(),
                        texts.len()
                    )
                    .into());
                }
                let stored = group.iter().map(|(c, _)| *c).zip(vectors).collect();
                self.model_changes.store(ctx, id, stored).await?;
            }
        }
    }

    // ----- ingestion ------------------------------------------------------------------

    /// Claims one due job and runs it; `false` when there was none.
    ///
    /// # Errors
    /// When the queue cannot be read or updated.
    pub async fn claim_and_run(&self, lease: chrono::Duration) -> Result<bool> {
        match self.jobs.claim(lease).await? {
            Some(job) => {
                self.run_job(&job).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Runs one claimed job to its end: on success it is completed; a failure is
    /// retried with exponential backoff until `max_attempts`, then the document ends in
    /// `error` with the last failure's message. Never leaves a document `processing`.
    ///
    /// # Errors
    /// Only when the queue itself cannot be updated (the lease then expires and
    /// another worker takes the job).
    pub async fn run_job(&self, job: &ClaimedJob) -> Result<()> {
        // Jobs carry their tenant; the worker is trusted system code.
        let ctx = TenantCtx::system(job.tenant_id);
        // A claim past the limit means earlier attempts died without reporting back
        // (a worker crashing on this very job): give up instead of looping.
        if job.attempt > self.config.max_attempts {
            let message = format!(
                "processing was interrupted {} times (the worker stopped before finishing)",
                job.attempt - 1
            );
            self.give_up(&ctx, &job.kind, &message).await?;
            return self.jobs.fail(job, &message).await;
        }
        let outcome = match job.kind.clone() {
            JobKind::ProcessDocument(doc) => self.process_document(&ctx, doc).await,
            JobKind::ChangeModel(coll) => self.run_model_change(&ctx, coll).await,
        };
        match outcome {
            Ok(()) => self.jobs.complete(job).await,
            Err(RagError::NotFound(_)) => self.jobs.complete(job).await, // deleted meanwhile
            Err(e) => {
                let message = format!("{e:#}");
                if job.attempt >= self.config.max_attempts {
                    self.give_up(&ctx, &job.kind, &message).await?;
                    self.jobs.fail(job, &message).await
                } else {
                    let backoff =
                        chrono::Duration::seconds(2_i64.saturating_pow(job.attempt.min(10)));
                    self.jobs
                        .retry(job, &message, self.clock.now() + backoff)
                        .await
                }
            }
        }
    }

    /// Records on the job's subject that it failed for good.
    async fn give_up(&self, ctx: &TenantCtx, kind: &JobKind, message: &str) -> Result<()> {
        match kind {
            JobKind::ProcessDocument(doc) => self.fail_document(ctx, *doc, message).await,
            JobKind::ChangeModel(coll) => {
                let message: String = message.chars().take(2000).collect();
                match self.model_changes.fail(ctx, *coll, &message).await {
                    Ok(()) | Err(RagError::NotFound(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn fail_document(&self, ctx: &TenantCtx, id: DocumentId, message: &str) -> Result<()> {
        let change = StatusChange {
            status: DocumentStatus::Error,
            error: Some(message.chars().take(2000).collect()),
            processed_at: None,
            chunk_count: None,
        };
        match self.documents.set_status(ctx, id, change).await {
            Ok(_) | Err(RagError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Extracts, chunks, embeds and indexes one document. A file that can't be read
    /// ends in `error` at once (retrying would not help); other failures are returned
    /// for the job to retry.
    ///
    /// # Errors
    /// `NotFound` if the document is gone; storage or embedder failures.
    pub async fn process_document(&self, ctx: &TenantCtx, id: DocumentId) -> Result<()> {
        let doc = self.documents.get(ctx, id).await?;
        let coll = self.collections.get(ctx, doc.collection_id).await?;
        self.documents
            .set_status(
                ctx,
                id,
                StatusChange {
                    status: DocumentStatus::Processing,
                    error: None,
                    processed_at: None,
                    chunk_count: None,
                },
            )
            .await?;
        let bytes = self.blobs.get(&doc.storage_key).await?;
        let extractor = self.extractor.clone();
        let name = doc.original_name.clone();
        let chunking = coll.chunking;
        let read = run_blocking(self.blocking.as_ref(), move || {
            extractor
                .extract(&bytes, &name)
                .map(|x| chunk_text(&x.text, &x.page_starts, chunking))
        });
        let drafts = match read.await {
            Err(BlockingFailure::Dropped) => {
                return Err(RagError::Unexpected(anyhow::anyhow!(
                    "reading the file was dropped before it ran"
                )));
            }
            // A panic would repeat on every try: the document fails now.
            Err(BlockingFailure::Panicked(panic)) => {
                let message = format!("reading the file failed: {panic}");
                return self.fail_document(ctx, id, &message).await;
            }
            Ok(Ok(drafts)) if drafts.is_empty() => {
                return self
                    .fail_document(ctx, id, &ExtractError::Empty.to_string())
                    .await;
            }
            Ok(Ok(drafts)) => drafts,
            Ok(Err(
                e @ (ExtractError::Unsupported(_) | ExtractError::Corrupt(_) | ExtractError::Empty),
            )) => {
                return self.fail_document(ctx, id, &e.to_string()).await;
            }
        };
        let embedder = self
            .embedders
            .get(&coll.embedding_model.id)
            .ok_or_else(|| RagError::ModelUnavailable(coll.embedding_model.id.clone()))?;
        let mut embedded = Vec::with_capacity(drafts.len());
        for (batch_no, batch) in drafts.chunks(self.config.embed_batch.max(1)).enumerate() {
            let texts: Vec<String> = batch.iter().map(|d| d.content.clone()).collect();
            let vectors = embedder.embed(&texts).await?;
            if vectors.len() != texts.len() {
                return Err(anyhow::anyhow!(
                    "embedder returned {} vectors for {} texts",
                    vectors.len(),
                    texts.len()
                )
                .into());
            }
            for (i, (draft, embedding)) in batch.iter().zip(vectors).enumerate() {
                let position = u32::try_from(batch_no * self.config.embed_batch.max(1) + i)
                    .unwrap_or(u32::MAX);
                embedded.push(EmbeddedChunk {
                    chunk: Chunk {
                        id: ChunkId::new(),
                        document_id: id,
                        collection_id: coll.id,
                        position,
                        content: draft.content.clone(),
                        span: draft.span.clone(),
                        token_count: draft.token_count,
                        source_type: doc.source_type,
                        metadata: doc.metadata.clone(),
                    },
                    embedding,
                });
            }
        }
        let count = u32::try_from(embedded.len()).unwrap_or(u32::MAX);
        self.chunks.replace_for_document(ctx, id, embedded).await?;
        // The collection may have switched models while we embedded: these vectors
        // are then of the old model. Fail this try; the retry embeds with the new one.
        let now_bound = self.collections.get(ctx, coll.id).await?.embedding_model;
        if now_bound != coll.embedding_model {
            return Err(anyhow::anyhow!(
                "the collection switched to embedding model `{}` while this document was processed",
                now_bound.id
            )
            .into());
        }
        self.documents
            .set_status(
                ctx,
                id,
                StatusChange {
                    status: DocumentStatus::Processed,
                    error: None,
                    processed_at: Some(self.clock.now()),
                    chunk_count: Some(count),
                },
            )
            .await?;
        Ok(())
    }

    // ----- search ---------------------------------------------------------------------

    /// Searches the tenant's chunks and returns the best `top_k`, each with a citation.
    ///
    /// # Errors
    /// `Forbidden` without `knowledge_read`; `Invalid`; `NotFound` for a collection
    /// filter naming another tenant's collection.
    pub async fn search(&self, ctx: &TenantCtx, query: &SearchQuery) -> Result<Vec<SearchHit>> {
        require(ctx, Permission::KnowledgeRead)?;
        query.validate()?;
        let k = query.top_k as usize;
        let collections = self.target_collections(ctx, &query.filter).await?;
        if collections.is_empty() {
            return Ok(Vec::new());
        }
        let candidates = match query.mode {
            SearchMode::Hybrid => k * self.config.hybrid_candidates_per_result.max(1),
            _ => k,
        };
        // The two halves of a hybrid search are independent: run them side by side so
        // the caller waits for the slower one, not for both in turn.
        let vector = async {
            if query.mode == SearchMode::Text {
                Ok(Vec::new())
            } else {
                self.vector_candidates(ctx, query, &collections, candidates)
                    .await
            }
        };
        // A vector search has no text half, so its query is not rewritten either.
        let text_query = (query.mode != SearchMode::Vector)
            .then(|| query.text_query())
            .flatten();
        let text = async {
            match &text_query {
                Some(text) => self.text.search(ctx, text, &query.filter, candidates).await,
                None => Ok(Vec::new()),
            }
        };
        let (vector, text) = futures::future::try_join(vector, text).await?;
        let mut ranked: Vec<(ChunkId, f32, Option<f32>, Option<f32>)> = match query.mode {
            SearchMode::Vector => vector
                .iter()
                .map(|s| (s.chunk, s.score, Some(s.score), None))
                .collect(),
            SearchMode::Text => text
                .iter()
                .map(|s| (s.chunk, s.score, None, Some(s.score)))
                .collect(),
            SearchMode::Hybrid => reciprocal_rank_fusion(&vector, &text)
                .into_iter()
                .map(|f| (f.chunk, f.score, f.vector_score, f.text_score))
                .collect(),
        };
        if let Some(min) = query.min_score {
            ranked.retain(|r| r.1 >= min);
        }
        ranked.truncate(k);
        self.hydrate(ctx, ranked).await
    }

    /// The collections a search covers, grouped later by embedding model.
    async fn target_collections(
        &self,
        ctx: &TenantCtx,
        filter: &SearchFilter,
    ) -> Result<Vec<Collection>> {
        if !filter.collections.is_empty() {
            // A few at a time: an agent's handful at once, without one search taking
            // the whole pool for a long list.
            let mut out = Vec::with_capacity(filter.collections.len());
            for ids in filter.collections.chunks(4) {
                let reads = ids.iter().map(|id| self.collections.get(ctx, *id));
                out.extend(futures::future::try_join_all(reads).await?);
            }
            return Ok(out);
        }
        let mut out = Vec::new();
        let mut page = PageRequest::new(Some(trellis_kernel::page::MAX_PAGE_SIZE), None)?;
        loop {
            let batch = self.collections.list(ctx, page).await?;
            out.extend(batch.items);
            match batch.next_cursor {
                Some(c) => page = PageRequest::new(Some(page.limit()), Some(&c))?,
                None => return Ok(out),
            }
        }
    }

    /// Vector candidates: the query is embedded once per model the collections use,
    /// each model's collections searched with its own vector, and the lists merged by
    /// cosine score.
    async fn vector_candidates(
        &self,
        ctx: &TenantCtx,
        query: &SearchQuery,
        collections: &[Collection],
        k: usize,
    ) -> Result<Vec<Scored>> {
        let mut by_model: BTreeMap<String, Vec<CollectionId>> = BTreeMap::new();
        for c in collections {
            by_model
                .entry(c.embedding_model.id.clone())
                .or_default()
                .push(c.id);
        }
        let mut all = Vec::new();
        for (model, ids) in by_model {
            let embedder = self
                .embedders
                .get(&model)
                .ok_or(RagError::ModelUnavailable(model))?;
            let mut vectors = embedder.embed(&[query.text.trim().to_owned()]).await?;
            let Some(vector) = vectors.pop() else {
                return Err(anyhow::anyhow!("embedder returned no vector for the query").into());
            };
            let filter = SearchFilter {
                collections: ids,
                ..query.filter.clone()
            };
            all.extend(self.vectors.search(ctx, &vector, &filter, k).await?);
        }
        all.sort_by(|a, b| b.score.total_cmp(&a.score));
        all.truncate(k);
        Ok(all)
    }

    async fn hydrate(
        &self,
        ctx: &TenantCtx,
        ranked: Vec<(ChunkId, f32, Option<f32>, Option<f32>)>,
    ) -> Result<Vec<SearchHit>> {
        let ids: Vec<ChunkId> = ranked.iter().map(|r| r.0).collect();
        let chunks: HashMap<ChunkId, CitedChunk> = self
            .chunks
            .cited(ctx, &ids)
            .await?
            .into_iter()
            .map(|c| (c.chunk.id, c))
            .collect();
        let mut hits = Vec::with_capacity(ranked.len());
        for (id, score, vector_score, text_score) in ranked {
            // A chunk (or document) deleted between index and lookup is simply not a
            // result.
            let Some(CitedChunk { chunk, filename }) = chunks.get(&id) else {
                continue;
            };
            hits.push(SearchHit {
                chunk_id: id,
                collection_id: chunk.collection_id,
                content: chunk.content.clone(),
                score,
                vector_score,
                text_score,
                citation: Citation {
                    document_id: chunk.document_id,
                    filename: filename.clone(),
                    span: chunk.span.clone(),
                },
            });
        }
        Ok(hits)
    }
}
