//! Knowledge collections, documents, their chunks and connector sync runs, plus the
//! search request and its cited results.

use crate::index::{ChunkId, CollectionId, Embedding};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use trellis_kernel::{InvalidValue, TenantId, Timestamp, UserId};

trellis_kernel::define_id!(
    /// An uploaded or synced document.
    DocumentId
);
trellis_kernel::define_id!(
    /// One run of a connector (Shopify, WordPress) that synced items into a collection.
    SyncRunId
);
trellis_kernel::define_id!(
    /// A durable background job.
    JobId
);

/// Where a collection's or document's content comes from (seed 000 `source_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceType {
    Manual,
    Upload,
    Shopify,
    Wordpress,
}

impl SourceType {
    pub const ALL: [SourceType; 4] = [
        SourceType::Manual,
        SourceType::Upload,
        SourceType::Shopify,
        SourceType::Wordpress,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Manual => "manual",
            SourceType::Upload => "upload",
            SourceType::Shopify => "shopify",
            SourceType::Wordpress => "wordpress",
        }
    }

    /// # Errors
    /// For an unknown source type.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        SourceType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                InvalidValue::new(
                    "source_type",
                    "must be manual, upload, shopify or wordpress",
                )
            })
    }
}

/// An embedding model a collection is bound to: an id the server's embedder registry
/// knows (`local/all-minilm-l6-v2`, `openai/text-embedding-3-small`, ...) and its
/// dimension. Vectors of different models never mix in one search.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EmbeddingModel {
    pub id: String,
    pub dimension: u32,
}

impl EmbeddingModel {
    /// # Errors
    /// When the id is not 1–100 printable characters or the dimension is outside 1–4096.
    pub fn new(id: &str, dimension: u32) -> Result<Self, InvalidValue> {
        let id = id.trim();
        if id.is_empty() || id.len() > 100 || id.chars().any(char::is_control) {
            return Err(InvalidValue::new(
                "embedding_model",
                "must be 1 to 100 characters",
            ));
        }
        if !(1..=4096).contains(&dimension) {
            return Err(InvalidValue::new(
                "embedding_dimension",
                "must be between 1 and 4096",
            ));
        }
        Ok(Self {
            id: id.to_owned(),
            dimension,
        })
    }
}

/// How documents of a collection are cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkingSettings {
    /// Upper bound of a chunk's size in tokens.
    pub max_tokens: u32,
    /// Tokens of the previous chunk repeated at the start of the next.
    pub overlap_tokens: u32,
}

impl Default for ChunkingSettings {
    fn default() -> Self {
        Self {
            max_tokens: 200,
            overlap_tokens: 30,
        }
    }
}

impl ChunkingSettings {
    /// # Errors
    /// When `max_tokens` is outside 16–2048 or the overlap is not below half of it.
    pub fn new(max_tokens: u32, overlap_tokens: u32) -> Result<Self, InvalidValue> {
        if !(16..=2048).contains(&max_tokens) {
            return Err(InvalidValue::new(
                "chunk_max_tokens",
                "must be between 16 and 2048",
            ));
        }
        // Widened: an overlap of 2^31 or more would overflow `u32` when doubled.
        if u64::from(overlap_tokens) * 2 >= u64::from(max_tokens) {
            return Err(InvalidValue::new(
                "chunk_overlap_tokens",
                "must be less than half of chunk_max_tokens",
            ));
        }
        Ok(Self {
            max_tokens,
            overlap_tokens,
        })
    }
}

/// A knowledge collection (seed 000 `knowledge_base_collections`).
#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    pub id: CollectionId,
    pub tenant_id: TenantId,
    pub name: String,
    pub description: Option<String>,
    /// The agent this collection answers for, if any (agents live in `content`).
    pub agent_id: Option<uuid::Uuid>,
    pub source_type: SourceType,
    pub chunking: ChunkingSettings,
    pub embedding_model: EmbeddingModel,
    /// A move to another embedding model in progress (or failed), if any. Search keeps
    /// using `embedding_model` until the move switches over.
    pub model_change: Option<ModelChange>,
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Where a collection's move to another embedding model stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelChangeStatus {
    /// Chunks are being embedded with the target model into a shadow index.
    Running,
    /// Gave up (see `error`); search still uses the old model. Start again to retry.
    Failed,
}

impl ModelChangeStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Failed => "failed",
        }
    }
}

/// A collection's move to `target`: its chunks are re-embedded into a shadow index in
/// the background, then the collection switches to it in one step.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelChange {
    pub target: EmbeddingModel,
    pub status: ModelChangeStatus,
    pub error: Option<String>,
    pub started_at: Timestamp,
}

/// How far a model change has come: chunks with a target-model vector of all chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModelChangeProgress {
    pub embedded: u64,
    pub total: u64,
}

/// A collection to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCollection {
    pub id: CollectionId,
    pub name: String,
    pub description: Option<String>,
    pub agent_id: Option<uuid::Uuid>,
    pub source_type: SourceType,
    pub chunking: ChunkingSettings,
    pub embedding_model: EmbeddingModel,
    pub created_by: Option<UserId>,
}

/// A partial update; `None` keeps a field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CollectionPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub agent_id: Option<Option<uuid::Uuid>>,
    pub chunking: Option<ChunkingSettings>,
}

/// Where a document is in its life (seed 003).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentStatus {
    Uploaded,
    Processing,
    Processed,
    Error,
}

impl DocumentStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentStatus::Uploaded => "uploaded",
            DocumentStatus::Processing => "processing",
            DocumentStatus::Processed => "processed",
            DocumentStatus::Error => "error",
        }
    }

    /// # Errors
    /// For an unknown status.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "uploaded" => Ok(DocumentStatus::Uploaded),
            "processing" => Ok(DocumentStatus::Processing),
            "processed" => Ok(DocumentStatus::Processed),
            "error" => Ok(DocumentStatus::Error),
            _ => Err(InvalidValue::new(
                "status",
                "must be uploaded, processing, processed or error",
            )),
        }
    }
}

/// Free-form string metadata, bounded so it cannot grow without limit.
pub type Metadata = BTreeMap<String, String>;

/// At most this many metadata entries, keys ≤ 64 and values ≤ 1024 characters.
pub const MAX_METADATA_ENTRIES: usize = 32;

/// # Errors
/// When the metadata breaks the bounds above.
pub fn validate_metadata(m: &Metadata) -> Result<(), InvalidValue> {
    if m.len() > MAX_METADATA_ENTRIES {
        return Err(InvalidValue::new(
            "metadata",
            format!("at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (k, v) in m {
        if k.is_empty() || k.chars().count() > 64 || v.chars().count() > 1024 {
            return Err(InvalidValue::new(
                "metadata",
                "keys must be 1–64 and values at most 1024 characters",
            ));
        }
        // NUL cannot be stored in Postgres text, and control characters in a filter key
        // or value are never intended: refuse them here rather than fail in storage.
        if k.chars().chain(v.chars()).any(char::is_control) {
            return Err(InvalidValue::new(
                "metadata",
                "keys and values must not contain control characters",
            ));
        }
    }
    Ok(())
}

/// A document of a collection (seeds 003, 004): an upload or a synced item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub id: DocumentId,
    pub collection_id: CollectionId,
    /// The name it is stored under (generated, safe).
    pub filename: String,
    /// The name the user uploaded it as.
    pub original_name: String,
    /// The type sniffed from the content, not the one the client claimed.
    pub mime_type: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the bytes; re-uploading the same file is recognised by it.
    pub checksum: String,
    pub storage_key: String,
    pub status: DocumentStatus,
    pub error: Option<String>,
    pub processed_at: Option<Timestamp>,
    pub source_type: SourceType,
    pub source_id: Option<String>,
    pub metadata: Metadata,
    pub chunk_count: u32,
    pub uploaded_by: Option<UserId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A document to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDocument {
    pub id: DocumentId,
    pub collection_id: CollectionId,
    pub filename: String,
    pub original_name: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub checksum: String,
    pub storage_key: String,
    pub source_type: SourceType,
    pub source_id: Option<String>,
    pub metadata: Metadata,
    pub uploaded_by: Option<UserId>,
}

/// A status change of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub status: DocumentStatus,
    pub error: Option<String>,
    pub processed_at: Option<Timestamp>,
    pub chunk_count: Option<u32>,
}

/// Which documents to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentFilter {
    pub collection: Option<CollectionId>,
    pub status: Option<DocumentStatus>,
}

/// A span of a document's extracted text: byte offsets, and where known the page
/// (1-based, PDF) and the heading path of the section it sits in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start: u32,
    pub end: u32,
    pub page: Option<u32>,
    pub section: Option<String>,
}

/// A chunk with the name its document was uploaded under: what a citation shows.
#[derive(Debug, Clone, PartialEq)]
pub struct CitedChunk {
    pub chunk: Chunk,
    pub filename: String,
}

/// One chunk of a document, as stored (its embedding lives in the vector index).
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub id: ChunkId,
    pub document_id: DocumentId,
    pub collection_id: CollectionId,
    pub position: u32,
    pub content: String,
    pub span: Span,
    pub token_count: u32,
    pub source_type: SourceType,
    pub metadata: Metadata,
}

/// A chunk with its embedding, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedChunk {
    pub chunk: Chunk,
    pub embedding: Embedding,
}

/// A connector run (seed 000 `sync_history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRun {
    pub id: SyncRunId,
    pub collection_id: CollectionId,
    pub sync_type: String,
    pub status: SyncStatus,
    pub items_synced: u32,
    pub error: Option<String>,
    pub started_at: Timestamp,
    pub completed_at: Option<Timestamp>,
}

/// Where a connector run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
}

/// How to match a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    /// Embedding similarity.
    Vector,
    /// Full-text relevance.
    Text,
    /// Both, fused by reciprocal rank.
    #[default]
    Hybrid,
}

/// How the full-text half reads the query's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextMatch {
    /// Web-search syntax, as typed into a search box: every word is required, `or`
    /// between two words makes either enough, quotes ask for a phrase and `-word`
    /// excludes one.
    #[default]
    All,
    /// Any of the query's words; the more of them a chunk holds, the higher it ranks.
    /// For questions: "how long do refunds take?" should find "refunds take 5 days",
    /// which lacks three of its words. A question's common words ("the", "how") match
    /// most chunks, all of which are then ranked: on a large collection that costs
    /// milliseconds a search-box query does not.
    Any,
}

/// Filters every search mode honours.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchFilter {
    /// Empty: all of the tenant's collections.
    pub collections: Vec<CollectionId>,
    /// Empty: any source type.
    pub source_types: Vec<SourceType>,
    /// Every entry must match the chunk's (document's) metadata exactly.
    pub metadata: Metadata,
}

/// The largest `top_k` a search may ask for.
pub const MAX_TOP_K: u32 = 50;
/// Most collections one search may name (an agent answers from at most 16).
pub const MAX_FILTER_COLLECTIONS: usize = 100;

/// A search request.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub text: String,
    pub mode: SearchMode,
    /// How the full-text half reads `text` (ignored by `vector` searches).
    pub text_match: TextMatch,
    pub filter: SearchFilter,
    pub top_k: u32,
    /// Results scoring below this are dropped (vector: cosine; text: rank; hybrid: fused).
    pub min_score: Option<f32>,
}

impl SearchQuery {
    /// # Errors
    /// When the text is empty or over 2000 characters, `top_k` is outside 1–50, or
    /// the filter names more than [`MAX_FILTER_COLLECTIONS`] collections.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let n = self.text.trim().chars().count();
        if n == 0 || n > 2000 {
            return Err(InvalidValue::new("query", "must be 1 to 2000 characters"));
        }
        if !(1..=MAX_TOP_K).contains(&self.top_k) {
            return Err(InvalidValue::new(
                "top_k",
                format!("must be between 1 and {MAX_TOP_K}"),
            ));
        }
        if self.min_score.is_some_and(|s| !s.is_finite()) {
            return Err(InvalidValue::new("min_score", "must be a number"));
        }
        if self.filter.collections.len() > MAX_FILTER_COLLECTIONS {
            return Err(InvalidValue::new(
                "collection_ids",
                format!("at most {MAX_FILTER_COLLECTIONS} collections"),
            ));
        }
        validate_metadata(&self.filter.metadata)
    }

    /// What the full-text half searches for, in web-search syntax (see
    /// [`crate::ports::TextIndex`]); `None` when no chunk can match (an `Any` query
    /// without words).
    #[must_use]
    pub fn text_query(&self) -> Option<String> {
        match self.text_match {
            TextMatch::All => Some(self.text.trim().to_owned()),
            TextMatch::Any => trellis_kernel::search::any_word_query(&self.text),
        }
    }
}

/// Where a hit came from, for the answer to cite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citation {
    pub document_id: DocumentId,
    pub filename: String,
    pub span: Span,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub chunk_id: ChunkId,
    pub collection_id: CollectionId,
    pub content: String,
    /// The score the results are ordered by (for hybrid, the fused score).
    pub score: f32,
    pub vector_score: Option<f32>,
    pub text_score: Option<f32>,
    pub citation: Citation,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlap_of_half_the_chunk_or_more_is_refused_however_large() {
        assert!(ChunkingSettings::new(200, 99).is_ok());
        for overlap in [100, 2_147_483_648, u32::MAX] {
            let err = ChunkingSettings::new(200, overlap).unwrap_err();
            assert_eq!(err.field, "chunk_overlap_tokens", "{overlap}");
        }
    }

    #[test]
    fn metadata_bounds_count_characters_not_bytes() {
        let entry =
            |k: usize, v: usize| -> Metadata { BTreeMap::from([("é".repeat(k), "ü".repeat(v))]) };
        assert!(validate_metadata(&entry(64, 1024)).is_ok());
        assert!(validate_metadata(&entry(65, 1)).is_err());
        assert!(validate_metadata(&entry(1, 1025)).is_err());
    }

    #[test]
    fn metadata_with_control_characters_is_refused_with_the_field_named() {
        let ok: Metadata = BTreeMap::from([("lang".into(), "en".into())]);
        assert!(validate_metadata(&ok).is_ok());
        for (k, v) in [("la\0ng", "en"), ("lang", "e\nn"), ("lang", "\u{7f}")] {
            let bad: Metadata = BTreeMap::from([(k.to_owned(), v.to_owned())]);
            let err = validate_metadata(&bad).unwrap_err();
            assert_eq!(err.field, "metadata", "{k:?}={v:?}");
        }
    }

    #[test]
    fn a_search_naming_more_collections_than_allowed_is_refused_with_the_field_named() {
        let query = |n: usize| SearchQuery {
            text: "refunds".into(),
            mode: SearchMode::Hybrid,
            text_match: TextMatch::Any,
            filter: SearchFilter {
                collections: (0..n).map(|_| CollectionId::new()).collect(),
                ..SearchFilter::default()
            },
            top_k: 5,
            min_score: None,
        };
        assert!(query(MAX_FILTER_COLLECTIONS).validate().is_ok());
        let err = query(MAX_FILTER_COLLECTIONS + 1).validate().unwrap_err();
        assert_eq!(err.field, "collection_ids");
    }
}
