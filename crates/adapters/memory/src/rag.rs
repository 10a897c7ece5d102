//! The RAG ports in memory: collections, documents, chunks, the in-process vector
//! index (one per embedding dimension), a small BM25 text index, blobs and an
//! in-process job queue with leases, so `trellis serve` without a database can ingest
//! and search too; and [`TokioBlocking`], which runs the domains' CPU-bound steps
//! (hashing uploads, ingestion's extraction) on Tokio's blocking threads whatever the
//! storage.

use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use trellis_kernel::{Page, PageRequest, TenantCtx, TenantId, Timestamp};
use trellis_rag::index::{
    ChunkId, CollectionId, Embedding, IndexConfig, VectorIndex as InProcessIndex,
};
use trellis_rag::{
    BlobStore, Chunk, ChunkRepo, CitedChunk, ClaimedJob, Collection, CollectionPatch,
    CollectionRepo, Document, DocumentFilter, DocumentId, DocumentRepo, DocumentStatus,
    EmbeddedChunk, EmbeddingModel, JobId, JobKind, JobQueue, ModelChange, ModelChangeProgress,
    ModelChangeRepo, ModelChangeStatus, NewCollection, NewDocument, RagError, Result, Scored,
    SearchFilter, StatusChange, TextIndex, VectorIndex,
};

use crate::store::{now, page_of};

#[derive(Clone)]
struct StoredChunk {
    chunk: Chunk,
    embedding: Embedding,
    tenant: TenantId,
    /// The target-model vector of a running model change (the shadow index).
    next: Option<Embedding>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

#[derive(Clone)]
struct Job {
    id: JobId,
    tenant: TenantId,
    kind: JobKind,
    state: JobState,
    attempts: u32,
    run_at: Timestamp,
    lease_until: Option<Timestamp>,
    last_error: Option<String>,
}

#[derive(Default)]
struct RagInner {
    collections: BTreeMap<(TenantId, CollectionId), Collection>,
    documents: BTreeMap<(TenantId, DocumentId), Document>,
    chunks: HashMap<ChunkId, StoredChunk>,
    jobs: BTreeMap<JobId, Job>,
    blobs: HashMap<String, Vec<u8>>,
}

impl RagInner {
    /// The tenant's chunks among `ids`; unknown ids and other tenants' are skipped.
    fn tenant_chunks<'a>(
        &'a self,
        tenant: TenantId,
        ids: &'a [ChunkId],
    ) -> impl Iterator<Item = &'a Chunk> + 'a {
        ids.iter()
            .filter_map(|id| self.chunks.get(id))
            .filter(move |c| c.tenant == tenant)
            .map(|c| &c.chunk)
    }
}

/// All RAG ports over process memory. Clone freely (it is an `Arc`).
#[derive(Clone, Default)]
pub struct MemoryRag {
    inner: Arc<RwLock<RagInner>>,
    indexes: Arc<RwLock<HashMap<usize, Arc<InProcessIndex>>>>,
}

impl std::fmt::Debug for MemoryRag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRag").finish_non_exhaustive()
    }
}

impl MemoryRag {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, RagInner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, RagInner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn index(&self, dimension: usize) -> Result<Arc<InProcessIndex>> {
        if let Some(i) = self
            .indexes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&dimension)
        {
            return Ok(i.clone());
        }
        let mut map = self
            .indexes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = map.get(&dimension) {
            return Ok(i.clone());
        }
        let index = Arc::new(
            InProcessIndex::new(IndexConfig::new(dimension))
                .map_err(|e| RagError::Unexpected(anyhow::anyhow!(e)))?,
        );
        map.insert(dimension, index.clone());
        Ok(index)
    }

    fn unindex(&self, tenant: TenantId, chunks: &[StoredChunk]) {
        let indexes = self
            .indexes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in chunks {
            if let Some(index) = indexes.get(&c.embedding.dimension()) {
                index.delete(tenant, c.chunk.collection_id, c.chunk.id);
            }
        }
    }
}

fn matches(filter: &SearchFilter, c: &Chunk) -> bool {
    (filter.collections.is_empty() || filter.collections.contains(&c.collection_id))
        && (filter.source_types.is_empty() || filter.source_types.contains(&c.source_type))
        && filter
            .metadata
            .iter()
            .all(|(k, v)| c.metadata.get(k) == Some(v))
}

#[async_trait]
impl CollectionRepo for MemoryRag {
    async fn insert(&self, ctx: &TenantCtx, new: NewCollection) -> Result<Collection> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        if db
            .collections
            .iter()
            .any(|((t, _), c)| *t == tid && c.name == new.name)
        {
            return Err(RagError::Conflict(
                "a collection with this name already exists".into(),
            ));
        }
        let at = now();
        let c = Collection {
            id: new.id,
            tenant_id: tid,
            name: new.name,
            description: new.description,
            agent_id: new.agent_id,
            source_type: new.source_type,
            chunking: new.chunking,
            embedding_model: new.embedding_model,
            model_change: None,
            created_by: new.created_by,
            created_at: at,
            updated_at: at,
        };
        db.collections.insert((tid, c.id), c.clone());
        Ok(c)
    }

    async fn get(&self, ctx: &TenantCtx, id: CollectionId) -> Result<Collection> {
        self.read()
            .collections
            .get(&(ctx.tenant_id(), id))
            .cloned()
            .ok_or(RagError::NotFound("collection"))
    }

    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<Collection>> {
        let db = self.read();
        let tid = ctx.tenant_id();
        let items = db
            .collections
            .iter()
            .filter(|((t, _), _)| *t == tid)
            .map(|(_, c)| c.clone());
        Ok(page_of(items, page, |c| c.id.as_uuid()))
    }

    async fn update(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        patch: CollectionPatch,
    ) -> Result<Collection> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        if let Some(name) = &patch.name
            && db
                .collections
                .iter()
                .any(|((t, cid), c)| *t == tid && *cid != id && &c.name == name)
        {
            return Err(RagError::Conflict(
                "a collection with this name already exists".into(),
            ));
        }
        let c = db
            .collections
            .get_mut(&(tid, id))
            .ok_or(RagError::NotFound("collection"))?;
        if let Some(v) = patch.name {
            c.name = v;
        }
        if let Some(v) = patch.description {
            c.description = v;
        }
        if let Some(v) = patch.agent_id {
            c.agent_id = v;
        }
        if let Some(v) = patch.chunking {
            c.chunking = v;
        }
        c.updated_at = now();
        Ok(c.clone())
    }

    async fn set_embedding_model(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        model: EmbeddingModel,
    ) -> Result<()> {
        let mut db = self.write();
        let c = db
            .collections
            .get_mut(&(ctx.tenant_id(), id))
            .ok_or(RagError::NotFound("collection"))?;
        c.embedding_model = model;
        c.updated_at = now();
        Ok(())
    }

    async fn delete(&self, ctx: &TenantCtx, id: CollectionId) -> Result<()> {
        let tid = ctx.tenant_id();
        let removed: Vec<StoredChunk> = {
            let mut db = self.write();
            db.collections
                .remove(&(tid, id))
                .ok_or(RagError::NotFound("collection"))?;
            db.documents
                .retain(|(t, _), d| !(*t == tid && d.collection_id == id));
            let gone: Vec<ChunkId> = db
                .chunks
                .iter()
                .filter(|(_, c)| c.tenant == tid && c.chunk.collection_id == id)
                .map(|(k, _)| *k)
                .collect();
            gone.iter().filter_map(|k| db.chunks.remove(k)).collect()
        };
        self.unindex(tid, &removed);
        Ok(())
    }
}

#[async_trait]
impl DocumentRepo for MemoryRag {
    async fn insert(&self, ctx: &TenantCtx, new: NewDocument) -> Result<Document> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        if !db.collections.contains_key(&(tid, new.collection_id)) {
            return Err(RagError::NotFound("collection"));
        }
        if db.documents.iter().any(|((t, _), d)| {
            *t == tid && d.collection_id == new.collection_id && d.checksum == new.checksum
        }) {
            return Err(RagError::Conflict(
                "this file is already in the collection".into(),
            ));
        }
        let at = now();
        let d = Document {
            id: new.id,
            collection_id: new.collection_id,
            filename: new.filename,
            original_name: new.original_name,
            mime_type: new.mime_type,
            size_bytes: new.size_bytes,
            checksum: new.checksum,
            storage_key: new.storage_key,
            status: DocumentStatus::Uploaded,
            error: None,
            processed_at: None,
            source_type: new.source_type,
            source_id: new.source_id,
            metadata: new.metadata,
            chunk_count: 0,
            uploaded_by: new.uploaded_by,
            created_at: at,
            updated_at: at,
        };
        db.documents.insert((tid, d.id), d.clone());
        Ok(d)
    }

    async fn get(&self, ctx: &TenantCtx, id: DocumentId) -> Result<Document> {
        self.read()
            .documents
            .get(&(ctx.tenant_id(), id))
            .cloned()
            .ok_or(RagError::NotFound("document"))
    }

    async fn find_by_checksum(
        &self,
        ctx: &TenantCtx,
        collection: CollectionId,
        checksum: &str,
    ) -> Result<Option<Document>> {
        let tid = ctx.tenant_id();
        Ok(self
            .read()
            .documents
            .iter()
            .find(|((t, _), d)| {
                *t == tid && d.collection_id == collection && d.checksum == checksum
            })
            .map(|(_, d)| d.clone()))
    }

    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &DocumentFilter,
        page: PageRequest,
    ) -> Result<Page<Document>> {
        let db = self.read();
        let tid = ctx.tenant_id();
        let items = db
            .documents
            .iter()
            .filter(|((t, _), d)| {
                *t == tid
                    && filter.collection.is_none_or(|c| d.collection_id == c)
                    && filter.status.is_none_or(|s| d.status == s)
            })
            .map(|(_, d)| d.clone());
        Ok(page_of(items, page, |d| d.id.as_uuid()))
    }

    async fn set_status(
        &self,
        ctx: &TenantCtx,
        id: DocumentId,
        change: StatusChange,
    ) -> Result<Document> {
        let mut db = self.write();
        let d = db
            .documents
            .get_mut(&(ctx.tenant_id(), id))
            .ok_or(RagError::NotFound("document"))?;
        d.status = change.status;
        d.error = change.error;
        d.processed_at = change.processed_at;
        if let Some(n) = change.chunk_count {
            d.chunk_count = n;
        }
        d.updated_at = now();
        Ok(d.clone())
    }

    async fn delete(&self, ctx: &TenantCtx, id: DocumentId) -> Result<()> {
        let tid = ctx.tenant_id();
        let removed: Vec<StoredChunk> = {
            let mut db = self.write();
            db.documents
                .remove(&(tid, id))
                .ok_or(RagError::NotFound("document"))?;
            let gone: Vec<ChunkId> = db
                .chunks
                .iter()
                .filter(|(_, c)| c.tenant == tid && c.chunk.document_id == id)
                .map(|(k, _)| *k)
                .collect();
            gone.iter().filter_map(|k| db.chunks.remove(k)).collect()
        };
        self.unindex(tid, &removed);
        Ok(())
    }
}

impl MemoryRag {
    fn collection_chunks(
        db: &mut RagInner,
        tid: TenantId,
        id: CollectionId,
    ) -> impl Iterator<Item = &mut StoredChunk> {
        db.chunks
            .values_mut()
            .filter(move |c| c.tenant == tid && c.chunk.collection_id == id)
    }
}

#[async_trait]
impl ModelChangeRepo for MemoryRag {
    async fn begin(&self, ctx: &TenantCtx, id: CollectionId, target: EmbeddingModel) -> Result<()> {
        let tid = ctx.tenant_id();
        let mut db = self.write();
        let c = db
            .collections
            .get_mut(&(tid, id))
            .ok_or(RagError::NotFound("collection"))?;
        let same_target = c.model_change.as_ref().is_some_and(|m| m.target == target);
        c.model_change = Some(ModelChange {
            target,
            status: ModelChangeStatus::Running,
            error: None,
            started_at: now(),
        });
        if !same_target {
            for chunk in Self::collection_chunks(&mut db, tid, id) {
                chunk.next = None;
            }
        }
        Ok(())
    }

    async fn pending(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        limit: usize,
    ) -> Result<Vec<(ChunkId, String)>> {
        let tid = ctx.tenant_id();
        let db = self.read();
        let running = db
            .collections
            .get(&(tid, id))
            .ok_or(RagError::NotFound("collection"))?
            .model_change
            .as_ref()
            .is_some_and(|m| m.status == ModelChangeStatus::Running);
        if !running {
            return Ok(Vec::new());
        }
        Ok(db
            .chunks
            .values()
            .filter(|c| c.tenant == tid && c.chunk.collection_id == id && c.next.is_none())
            .take(limit)
            .map(|c| (c.chunk.id, c.chunk.content.clone()))
            .collect())
    }

    async fn store(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        vectors: Vec<(ChunkId, Embedding)>,
    ) -> Result<()> {
        let tid = ctx.tenant_id();
        let mut db = self.write();
        let target = db
            .collections
            .get(&(tid, id))
            .ok_or(RagError::NotFound("collection"))?
            .model_change
            .as_ref()
            .map(|m| m.target.dimension as usize)
            .ok_or_else(|| RagError::Conflict("no embedding model change is running".into()))?;
        if vectors.iter().any(|(_, v)| v.dimension() != target) {
            return Err(RagError::Unexpected(anyhow::anyhow!(
                "a vector does not have the target model's dimension {target}"
            )));
        }
        for (chunk, vector) in vectors {
            if let Some(c) = db
                .chunks
                .get_mut(&chunk)
                .filter(|c| c.tenant == tid && c.chunk.collection_id == id)
            {
                c.next = Some(vector);
            }
        }
        Ok(())
    }

    async fn progress(&self, ctx: &TenantCtx, id: CollectionId) -> Result<ModelChangeProgress> {
        let tid = ctx.tenant_id();
        let db = self.read();
        if !db.collections.contains_key(&(tid, id)) {
            return Err(RagError::NotFound("collection"));
        }
        let (mut embedded, mut total) = (0, 0);
        for c in db
            .chunks
            .values()
            .filter(|c| c.tenant == tid && c.chunk.collection_id == id)
        {
            total += 1;
            embedded += u64::from(c.next.is_some());
        }
        Ok(ModelChangeProgress { embedded, total })
    }

    async fn switch(&self, ctx: &TenantCtx, id: CollectionId) -> Result<bool> {
        let tid = ctx.tenant_id();
        let mut db = self.write();
        let coll = db
            .collections
            .get(&(tid, id))
            .ok_or(RagError::NotFound("collection"))?;
        let Some(change) = coll.model_change.clone() else {
            return Ok(false);
        };
        if change.status != ModelChangeStatus::Running
            || Self::collection_chunks(&mut db, tid, id).any(|c| c.next.is_none())
        {
            return Ok(false);
        }
        // All under the data lock, so the rows and the index switch in one step. New
        // vectors go in before old ones leave, so no search finds the collection empty.
        let target = self.index(change.target.dimension as usize)?;
        let mut moved_from = Vec::new();
        for c in Self::collection_chunks(&mut db, tid, id) {
            if let Some(next) = c.next.take() {
                target
                    .upsert(tid, id, c.chunk.id, &next)
                    .map_err(|e| RagError::Unexpected(anyhow::anyhow!(e)))?;
                if next.dimension() != c.embedding.dimension() {
                    moved_from.push(c.clone());
                }
                c.embedding = next;
            }
        }
        self.unindex(tid, &moved_from);
        if let Some(coll) = db.collections.get_mut(&(tid, id)) {
            coll.embedding_model = change.target;
            coll.model_change = None;
            coll.updated_at = now();
        }
        Ok(true)
    }

    async fn fail(&self, ctx: &TenantCtx, id: CollectionId, error: &str) -> Result<()> {
        let mut db = self.write();
        let c = db
            .collections
            .get_mut(&(ctx.tenant_id(), id))
            .ok_or(RagError::NotFound("collection"))?;
        if let Some(m) = &mut c.model_change {
            m.status = ModelChangeStatus::Failed;
            m.error = Some(error.to_owned());
        }
        Ok(())
    }

    async fn cancel(&self, ctx: &TenantCtx, id: CollectionId) -> Result<()> {
        let tid = ctx.tenant_id();
        let mut db = self.write();
        db.collections
            .get_mut(&(tid, id))
            .ok_or(RagError::NotFound("collection"))?
            .model_change = None;
        for chunk in Self::collection_chunks(&mut db, tid, id) {
            chunk.next = None;
        }
        Ok(())
    }
}

#[async_trait]
impl ChunkRepo for MemoryRag {
    async fn replace_for_document(
        &self,
        ctx: &TenantCtx,
        document: DocumentId,
        chunks: Vec<EmbeddedChunk>,
    ) -> Result<()> {
        let tid = ctx.tenant_id();
        // Validate everything before changing anything, so a bad batch changes nothing.
        let Some(first) = chunks.first() else {
            return Err(RagError::Unexpected(anyhow::anyhow!("no chunks to store")));
        };
        let dimension = first.embedding.dimension();
        if chunks
            .iter()
            .any(|c| c.embedding.dimension() != dimension || c.chunk.document_id != document)
        {
            return Err(RagError::Unexpected(anyhow::anyhow!(
                "chunks of one document must share document and dimension"
            )));
        }
        let index = self.index(dimension)?;
        let old: Vec<StoredChunk> = {
            let mut db = self.write();
            if !db.documents.contains_key(&(tid, document)) {
                return Err(RagError::NotFound("document"));
            }
            let gone: Vec<ChunkId> = db
                .chunks
                .iter()
                .filter(|(_, c)| c.tenant == tid && c.chunk.document_id == document)
                .map(|(k, _)| *k)
                .collect();
            let old = gone.iter().filter_map(|k| db.chunks.remove(k)).collect();
            for c in &chunks {
                db.chunks.insert(
                    c.chunk.id,
                    StoredChunk {
                        chunk: c.chunk.clone(),
                        embedding: c.embedding.clone(),
                        tenant: tid,
                        next: None,
                    },
                );
            }
            old
        };
        self.unindex(tid, &old);
        for c in &chunks {
            index
                .upsert(tid, c.chunk.collection_id, c.chunk.id, &c.embedding)
                .map_err(|e| RagError::Unexpected(anyhow::anyhow!(e)))?;
        }
        Ok(())
    }

    async fn get_many(&self, ctx: &TenantCtx, ids: &[ChunkId]) -> Result<Vec<Chunk>> {
        let db = self.read();
        Ok(db.tenant_chunks(ctx.tenant_id(), ids).cloned().collect())
    }

    async fn cited(&self, ctx: &TenantCtx, ids: &[ChunkId]) -> Result<Vec<CitedChunk>> {
        let db = self.read();
        let tid = ctx.tenant_id();
        Ok(db
            .tenant_chunks(tid, ids)
            .filter_map(|c| {
                let document = db.documents.get(&(tid, c.document_id))?;
                Some(CitedChunk {
                    chunk: c.clone(),
                    filename: document.original_name.clone(),
                })
            })
            .collect())
    }

    async fn for_document(&self, ctx: &TenantCtx, document: DocumentId) -> Result<Vec<Chunk>> {
        let db = self.read();
        let tid = ctx.tenant_id();
        let mut out: Vec<Chunk> = db
            .chunks
            .values()
            .filter(|c| c.tenant == tid && c.chunk.document_id == document)
            .map(|c| c.chunk.clone())
            .collect();
        out.sort_by_key(|c| c.position);
        Ok(out)
    }
}

#[async_trait]
impl VectorIndex for MemoryRag {
    async fn search(
        &self,
        ctx: &TenantCtx,
        query: &Embedding,
        filter: &SearchFilter,
        k: usize,
    ) -> Result<Vec<Scored>> {
        let tid = ctx.tenant_id();
        if filter.source_types.is_empty() && filter.metadata.is_empty() {
            let index = self.index(query.dimension())?;
            let hits = index
                .search(tid, &filter.collections, query, k, f32::NAN)
                .map_err(|e| RagError::Unexpected(anyhow::anyhow!(e)))?;
            return Ok(hits
                .into_iter()
                .map(|h| Scored {
                    chunk: h.chunk,
                    score: h.score,
                })
                .collect());
        }
        // Attribute filters the index does not know: an exact scan is always correct.
        let db = self.read();
        let mut scored: Vec<Scored> = db
            .chunks
            .values()
            .filter(|c| {
                c.tenant == tid
                    && c.embedding.dimension() == query.dimension()
                    && matches(filter, &c.chunk)
            })
            .map(|c| Scored {
                chunk: c.chunk.id,
                score: c.embedding.cosine(query),
            })
            .collect();
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        scored.truncate(k);
        Ok(scored)
    }
}

fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A word, or a quoted phrase, of a web-search query; `negated` for a leading `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    words: Vec<String>,
    negated: bool,
}

impl Clause {
    /// Whether a chunk with these terms satisfies the clause: its words appear in order
    /// next to each other (absent, when negated).
    fn holds(&self, terms: &[String]) -> bool {
        let n = self.words.len();
        let found = n > 0 && terms.windows(n).any(|w| w == self.words.as_slice());
        found != self.negated
    }
}

/// A query in web-search syntax, as Postgres' `websearch_to_tsquery` reads it: groups
/// separated by `or`, any of which may match; a group matches when all of its clauses
/// hold. `or` with nothing on one side is ignored, as there.
fn web_search(query: &str) -> Vec<Vec<Clause>> {
    let chars: Vec<char> = query.chars().collect();
    // A `-` right before a word or quote, at the start or after a non-word character.
    let negated_at =
        |i: usize| i > 0 && chars[i - 1] == '-' && (i < 2 || !chars[i - 2].is_alphanumeric());
    let mut groups: Vec<Vec<Clause>> = vec![Vec::new()];
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|c| *c == '"')
                .map_or(chars.len(), |p| i + 1 + p);
            let words = terms(&chars[i + 1..end].iter().collect::<String>());
            if !words.is_empty() {
                let negated = negated_at(i);
                if let Some(group) = groups.last_mut() {
                    group.push(Clause { words, negated });
                }
            }
            i = end + 1;
        } else if chars[i].is_alphanumeric() {
            let end = chars[i..]
                .iter()
                .position(|c| !c.is_alphanumeric())
                .map_or(chars.len(), |p| i + p);
            let word: String = chars[i..end].iter().collect::<String>().to_lowercase();
            let negated = negated_at(i);
            if word == "or" && !negated {
                if groups.last().is_some_and(|g| !g.is_empty()) {
                    groups.push(Vec::new());
                }
            } else {
                if let Some(group) = groups.last_mut() {
                    group.push(Clause {
                        words: vec![word],
                        negated,
                    });
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    groups.retain(|g| !g.is_empty());
    groups
}

#[async_trait]
impl TextIndex for MemoryRag {
    /// The chunks the query matches (web-search syntax, see [`TextIndex`]), ranked by
    /// BM25 (k1 = 1.2, b = 0.75) over the query's wanted words.
    async fn search(
        &self,
        ctx: &TenantCtx,
        query: &str,
        filter: &SearchFilter,
        k: usize,
    ) -> Result<Vec<Scored>> {
        let groups = web_search(query);
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut wanted: Vec<&String> = groups
            .iter()
            .flatten()
            .filter(|c| !c.negated)
            .flat_map(|c| &c.words)
            .collect();
        wanted.sort();
        wanted.dedup();
        let db = self.read();
        let tid = ctx.tenant_id();
        let docs: Vec<(ChunkId, Vec<String>)> = db
            .chunks
            .values()
            .filter(|c| c.tenant == tid && matches(filter, &c.chunk))
            .map(|c| (c.chunk.id, terms(&c.chunk.content)))
            .collect();
        let n = docs.len() as f32;
        let avg = docs.iter().map(|(_, t)| t.len()).sum::<usize>() as f32 / n.max(1.0);
        let mut scored: Vec<Scored> = docs
            .iter()
            .filter(|(_, t)| groups.iter().any(|g| g.iter().all(|c| c.holds(t))))
            .map(|(id, t)| {
                let score: f32 = wanted
                    .iter()
                    .map(|term| {
                        let tf = t.iter().filter(|x| x == term).count() as f32;
                        if tf == 0.0 {
                            return 0.0;
                        }
                        let df = docs.iter().filter(|(_, d)| d.contains(term)).count() as f32;
                        let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                        idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * t.len() as f32 / avg.max(1.0)))
                    })
                    .sum();
                Scored { chunk: *id, score }
            })
            .collect();
        // Ties (every match of `-word` alone scores 0) in id order, as Postgres orders.
        scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.chunk.cmp(&b.chunk)));
        scored.truncate(k);
        Ok(scored)
    }
}

#[async_trait]
impl BlobStore for MemoryRag {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.write().blobs.insert(key.to_owned(), bytes);
        Ok(())
    }

    async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        self.read()
            .blobs
            .get(key)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("blob `{key}` not found"))
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.write().blobs.remove(key);
        Ok(())
    }
}

/// The job, if `job`'s claim still holds it: running, at the same attempt. A worker
/// whose lease ran out and whose job was claimed again gets `None` (as on Postgres).
fn held<'a>(jobs: &'a mut BTreeMap<JobId, Job>, job: &ClaimedJob) -> Option<&'a mut Job> {
    jobs.get_mut(&job.id)
        .filter(|j| j.state == JobState::Running && j.attempts == job.attempt)
}

#[async_trait]
impl JobQueue for MemoryRag {
    async fn enqueue(&self, ctx: &TenantCtx, kind: JobKind) -> Result<JobId> {
        let id = JobId::new();
        self.write().jobs.insert(
            id,
            Job {
                id,
                tenant: ctx.tenant_id(),
                kind,
                state: JobState::Queued,
                attempts: 0,
                run_at: now(),
                lease_until: None,
                last_error: None,
            },
        );
        Ok(id)
    }

    async fn claim(&self, lease: chrono::Duration) -> Result<Option<ClaimedJob>> {
        let at = now();
        let mut db = self.write();
        let job = db
            .jobs
            .values_mut()
            .filter(|j| {
                (j.state == JobState::Queued && j.run_at <= at)
                    || (j.state == JobState::Running && j.lease_until.is_some_and(|l| l < at))
            })
            .min_by_key(|j| j.run_at);
        Ok(job.map(|j| {
            j.state = JobState::Running;
            j.attempts += 1;
            j.lease_until = Some(at + lease);
            ClaimedJob {
                id: j.id,
                tenant_id: j.tenant,
                kind: j.kind.clone(),
                attempt: j.attempts,
                lease_until: at + lease,
            }
        }))
    }

    async fn extend(&self, job: &ClaimedJob, lease: chrono::Duration) -> Result<bool> {
        let mut db = self.write();
        Ok(match held(&mut db.jobs, job) {
            Some(j) => {
                j.lease_until = Some(now() + lease);
                true
            }
            None => false,
        })
    }

    async fn complete(&self, job: &ClaimedJob) -> Result<()> {
        if let Some(j) = held(&mut self.write().jobs, job) {
            j.state = JobState::Done;
            j.lease_until = None;
        }
        Ok(())
    }

    async fn retry(&self, job: &ClaimedJob, error: &str, retry_at: Timestamp) -> Result<()> {
        if let Some(j) = held(&mut self.write().jobs, job) {
            j.state = JobState::Queued;
            j.run_at = retry_at;
            j.lease_until = None;
            j.last_error = Some(error.to_owned());
        }
        Ok(())
    }

    async fn fail(&self, job: &ClaimedJob, error: &str) -> Result<()> {
        if let Some(j) = held(&mut self.write().jobs, job) {
            j.state = JobState::Failed;
            j.lease_until = None;
            j.last_error = Some(error.to_owned());
        }
        Ok(())
    }
}

/// Runs the domains' CPU-bound steps (`trellis_kernel::BlockingRunner`) on Tokio's
/// blocking threads, so hashing a large upload or extracting a long PDF never holds up
/// the requests served on the same runtime. Called from a Tokio runtime only (as the
/// services are): elsewhere it panics.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioBlocking;

impl trellis_rag::BlockingRunner for TokioBlocking {
    fn run(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        // A step dropped unrun at shutdown drops its sender: the caller sees
        // `BlockingFailure::Dropped` (ingestion tries the job again later).
        drop(tokio::task::spawn_blocking(work));
    }
}
