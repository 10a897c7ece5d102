//! The content domain's file ports over RAG's pieces: attachment bytes go to the same
//! blob storage as knowledge documents, types are sniffed and text is read for prompts
//! by the same extractor, and
//! sending a file to a collection is an ordinary RAG upload (so the ingestion
//! workers pick it up like any other).

use async_trait::async_trait;
use hashlink::LruCache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::OnceCell;
use trellis_content::{
    AttachmentReader, ContentError, FileAttachment, FileBlobs, FileId, FileSniffer,
    KnowledgeCollectionId, KnowledgeDocumentId, KnowledgeIntake,
};
use trellis_kernel::{TenantCtx, TenantId};
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
/// since a large PDF takes a while. Every answer in a conversation puts its attached
/// files in the prompt again, so what was extracted is kept in `cache`: an attachment
/// never changes once uploaded, and fetching and extracting it again on every turn
/// would repeat the slowest part of a turn.
pub struct ExtractedAttachments {
    pub blobs: Arc<dyn BlobStore>,
    pub extractor: Arc<dyn TextExtractor>,
    pub cache: AttachmentTexts,
}

impl ExtractedAttachments {
    /// Fetches and extracts the attachment, and keeps what it found in the cache.
    async fn extract(
        &self,
        key: TextKey,
        file: &FileAttachment,
        max_chars: usize,
    ) -> trellis_content::Result<Option<Arc<str>>> {
        let bytes = self.blobs.get(&file.storage_key).await?;
        let extractor = self.extractor.clone();
        let filename = file.filename.clone();
        let extracted = tokio::task::spawn_blocking(move || extractor.extract(&bytes, &filename))
            .await
            .map_err(|e| ContentError::Unexpected(anyhow::Error::new(e)))?;
        let text: Option<Arc<str>> = match extracted {
            Ok(e) if !e.text.trim().is_empty() => Some(Arc::from(
                e.text.chars().take(max_chars).collect::<String>(),
            )),
            Ok(_) => None,
            Err(e) => {
                // The file was accepted when uploaded, so this is unusual (a type the
                // sniffer knows but cannot read, a corrupt PDF): answer without it.
                tracing::warn!(file = %file.id, error = %e, "an attached file has no readable text");
                None
            }
        };
        self.cache.put(key, max_chars, text.clone());
        Ok(text)
    }
}

#[async_trait]
impl AttachmentReader for ExtractedAttachments {
    async fn text(
        &self,
        ctx: &TenantCtx,
        file: &FileAttachment,
        max_chars: usize,
    ) -> trellis_content::Result<Option<String>> {
        let key = (ctx.tenant_id(), file.id);
        if let Some(text) = self.cache.get(&key, max_chars) {
            return Ok(text.map(|t| t.to_string()));
        }
        // Answers that need the same attachment at the same time (a question and a
        // regenerate, two tabs) wait for one extraction instead of each running
        // their own: a large PDF is the slowest part of a turn and holds a blocking
        // thread while it runs. A failed extraction is not shared: the next waiter
        // tries again.
        let flight = self.cache.flight(key, max_chars);
        let text = flight
            .cell
            .get_or_try_init(|| self.extract(key, file, max_chars))
            .await?
            .clone();
        Ok(text.map(|t| t.to_string()))
    }

    fn forget(&self, ctx: &TenantCtx, file: FileId) {
        self.cache.forget(&(ctx.tenant_id(), file));
    }
}

/// Which attachment.
type TextKey = (TenantId, FileId);

/// Extracted attachment texts (or that a file has none), least recently used first,
/// within a budget of bytes of text. Keys carry the tenant, so one tenant's file id
/// can never bring up another's text. Deleting a file forgets its text on the
/// instance that deleted it; elsewhere it stays until it ages out, but is never asked
/// for: answering skips attachments whose file is gone.
pub struct AttachmentTexts {
    entries: Mutex<Entries>,
    budget_bytes: usize,
    /// Extractions running now, by attachment and limit, for callers to wait on.
    flights: Mutex<HashMap<(TextKey, usize), Arc<FlightCell>>>,
}

/// What one extraction of an attachment found, once it is done.
type FlightCell = OnceCell<Option<Arc<str>>>;

/// A caller's share of an extraction running now ([`AttachmentTexts::flight`]); the
/// last caller to let go of it takes it off the list, done or not.
struct Flight<'a> {
    texts: &'a AttachmentTexts,
    key: (TextKey, usize),
    cell: Arc<FlightCell>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut flights = self.texts.lock_flights();
        // Held by the list and by this caller only: nobody else waits on it.
        let last = flights
            .get(&self.key)
            .is_some_and(|cell| Arc::ptr_eq(cell, &self.cell) && Arc::strong_count(cell) == 2);
        if last {
            flights.remove(&self.key);
        }
    }
}

struct Entries {
    /// The text cut at how many characters, and the text (`None`: the file has none).
    texts: LruCache<TextKey, (usize, Option<Arc<str>>)>,
    bytes: usize,
}

/// What an entry counts against the budget: its text plus a fixed allowance for the
/// key and bookkeeping, so that many text-less files are bounded too.
fn entry_bytes(text: Option<&Arc<str>>) -> usize {
    64 + text.map_or(0, |t| t.len())
}

impl AttachmentTexts {
    /// A cache holding at most `budget_bytes` of text; 0 turns it off.
    #[must_use]
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            entries: Mutex::new(Entries {
                texts: LruCache::new_unbounded(),
                bytes: 0,
            }),
            budget_bytes,
            flights: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_flights(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(TextKey, usize), Arc<FlightCell>>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The extraction of `key` at `max_chars` running now, joined, or a new one.
    fn flight(&self, key: TextKey, max_chars: usize) -> Flight<'_> {
        let key = (key, max_chars);
        let cell = self.lock_flights().entry(key).or_default().clone();
        Flight {
            texts: self,
            key,
            cell,
        }
    }

    /// Extractions running now.
    #[cfg(test)]
    fn flights(&self) -> usize {
        self.lock_flights().len()
    }

    /// The text kept for `key` cut at `max_chars` (`Some(None)`: the file has none),
    /// and now the most recently used. A text kept at another limit is a miss (the
    /// limit is one setting, so that happens only in tests).
    fn get(&self, key: &TextKey, max_chars: usize) -> Option<Option<Arc<str>>> {
        match self.lock().texts.get(key) {
            Some((limit, text)) if *limit == max_chars => Some(text.clone()),
            _ => None,
        }
    }

    fn put(&self, key: TextKey, max_chars: usize, text: Option<Arc<str>>) {
        let size = entry_bytes(text.as_ref());
        if size > self.budget_bytes {
            return;
        }
        let mut entries = self.lock();
        if let Some((_, old)) = entries.texts.insert(key, (max_chars, text)) {
            entries.bytes -= entry_bytes(old.as_ref());
        }
        entries.bytes += size;
        while entries.bytes > self.budget_bytes {
            match entries.texts.remove_lru() {
                Some((_, (_, gone))) => entries.bytes -= entry_bytes(gone.as_ref()),
                None => break,
            }
        }
    }

    /// Drops the text kept for the file.
    fn forget(&self, key: &TextKey) {
        let mut entries = self.lock();
        if let Some((_, gone)) = entries.texts.remove(key) {
            entries.bytes -= entry_bytes(gone.as_ref());
        }
    }

    /// Bytes counted against the budget now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use trellis_blob::InMemoryBlobStore;
    use trellis_content::ConversationId;
    use trellis_kernel::{Actor, Role, UserId};
    use trellis_rag::{ExtractError, Extracted};

    /// Reads bytes as UTF-8 text and counts how often it was asked to.
    #[derive(Default)]
    struct CountingExtractor {
        calls: AtomicUsize,
        /// How long each extraction takes, as a large PDF's would.
        takes: std::time::Duration,
    }

    impl TextExtractor for CountingExtractor {
        fn sniff(&self, _bytes: &[u8], _filename: &str) -> Option<String> {
            Some("text/plain".into())
        }

        fn extract(&self, bytes: &[u8], _filename: &str) -> Result<Extracted, ExtractError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.takes);
            Ok(Extracted {
                mime_type: "text/plain".into(),
                text: String::from_utf8_lossy(bytes).into_owned(),
                page_starts: Vec::new(),
            })
        }
    }

    struct Fixture {
        reader: ExtractedAttachments,
        extractor: Arc<CountingExtractor>,
        blobs: Arc<InMemoryBlobStore>,
    }

    fn fixture(budget_bytes: usize) -> Fixture {
        fixture_with(budget_bytes, CountingExtractor::default())
    }

    fn fixture_with(budget_bytes: usize, extractor: CountingExtractor) -> Fixture {
        let extractor = Arc::new(extractor);
        let blobs = Arc::new(InMemoryBlobStore::new());
        Fixture {
            reader: ExtractedAttachments {
                blobs: blobs.clone(),
                extractor: extractor.clone(),
                cache: AttachmentTexts::new(budget_bytes),
            },
            extractor,
            blobs,
        }
    }

    impl Fixture {
        async fn file(&self, text: &str) -> FileAttachment {
            let id = FileId::new();
            let storage_key = format!("files/{id}");
            self.blobs
                .put(&storage_key, text.as_bytes().to_vec())
                .await
                .unwrap();
            FileAttachment {
                id,
                owner_id: UserId::new(),
                conversation_id: Some(ConversationId::new()),
                filename: "notes.txt".into(),
                mime_type: "text/plain".into(),
                size_bytes: text.len() as u64,
                checksum: "x".into(),
                storage_key,
                knowledge_document_id: None,
                created_at: chrono::Utc::now(),
            }
        }

        fn extractions(&self) -> usize {
            self.extractor.calls.load(Ordering::SeqCst)
        }
    }

    fn ctx(tenant: TenantId) -> TenantCtx {
        TenantCtx::authenticated(tenant, Actor::User(UserId::new()), Role::User, None)
    }

    #[tokio::test]
    async fn an_attachment_is_extracted_once_however_many_answers_put_it_in_a_prompt() {
        let f = fixture(1 << 20);
        let file = f.file("Refunds take 14 days.").await;
        let a = ctx(TenantId::new());
        for _ in 0..3 {
            let text = f.reader.text(&a, &file, 100).await.unwrap();
            assert_eq!(text.as_deref(), Some("Refunds take 14 days."));
        }
        assert_eq!(f.extractions(), 1);
        // Another limit is extracted again, cut to that limit.
        let short = f.reader.text(&a, &file, 7).await.unwrap();
        assert_eq!(short.as_deref(), Some("Refunds"));
        assert_eq!(f.extractions(), 2);
    }

    #[tokio::test]
    async fn answers_that_need_an_attachment_at_the_same_time_share_one_extraction() {
        // No cache, so only the sharing can save the second extraction.
        let f = fixture_with(
            0,
            CountingExtractor {
                takes: std::time::Duration::from_millis(50),
                ..CountingExtractor::default()
            },
        );
        let file = f.file("Refunds take 14 days.").await;
        let a = ctx(TenantId::new());
        let texts = tokio::join!(
            f.reader.text(&a, &file, 100),
            f.reader.text(&a, &file, 100),
            f.reader.text(&a, &file, 100),
            f.reader.text(&a, &file, 100),
        );
        for text in [texts.0, texts.1, texts.2, texts.3] {
            assert_eq!(text.unwrap().as_deref(), Some("Refunds take 14 days."));
        }
        assert_eq!(f.extractions(), 1);
        assert_eq!(f.reader.cache.flights(), 0, "nothing is left waiting");
        // Once done, a later answer extracts again (the cache is off).
        f.reader.text(&a, &file, 100).await.unwrap();
        assert_eq!(f.extractions(), 2);
    }

    #[tokio::test]
    async fn a_failed_read_of_an_attachment_is_not_shared_with_the_next_answer() {
        let f = fixture(1 << 20);
        let file = f.file("Refunds take 14 days.").await;
        let a = ctx(TenantId::new());
        f.blobs.delete(&file.storage_key).await.unwrap();
        assert!(f.reader.text(&a, &file, 100).await.is_err());
        assert_eq!(f.reader.cache.flights(), 0);
        f.blobs
            .put(&file.storage_key, b"Back again.".to_vec())
            .await
            .unwrap();
        let text = f.reader.text(&a, &file, 100).await.unwrap();
        assert_eq!(text.as_deref(), Some("Back again."));
    }

    #[tokio::test]
    async fn a_file_without_text_is_remembered_as_having_none() {
        let f = fixture(1 << 20);
        let file = f.file("   ").await;
        let a = ctx(TenantId::new());
        assert_eq!(f.reader.text(&a, &file, 100).await.unwrap(), None);
        assert_eq!(f.reader.text(&a, &file, 100).await.unwrap(), None);
        assert_eq!(f.extractions(), 1);
    }

    #[tokio::test]
    async fn the_same_file_id_in_another_tenant_is_never_answered_from_the_first_tenants_text() {
        let f = fixture(1 << 20);
        let mine = f.file("tenant A's contract").await;
        let mut theirs = f.file("tenant B's contract").await;
        theirs.id = mine.id;
        let (a, b) = (ctx(TenantId::new()), ctx(TenantId::new()));
        let read_a = f.reader.text(&a, &mine, 100).await.unwrap();
        let read_b = f.reader.text(&b, &theirs, 100).await.unwrap();
        assert_eq!(read_a.as_deref(), Some("tenant A's contract"));
        assert_eq!(read_b.as_deref(), Some("tenant B's contract"));
    }

    #[tokio::test]
    async fn beyond_its_budget_the_cache_forgets_the_least_recently_used_text() {
        let text = "x".repeat(1000);
        // Room for two texts of 1000 bytes, not three.
        let f = fixture(2 * entry_bytes(Some(&Arc::from(text.as_str()))));
        let (one, two, three) = (
            f.file(&text).await,
            f.file(&text).await,
            f.file(&text).await,
        );
        let a = ctx(TenantId::new());
        for file in [&one, &two] {
            f.reader.text(&a, file, 5000).await.unwrap();
        }
        // `one` is used again, so `two` is the least recently used when `three` comes.
        f.reader.text(&a, &one, 5000).await.unwrap();
        f.reader.text(&a, &three, 5000).await.unwrap();
        assert_eq!(f.extractions(), 3);
        assert!(f.reader.cache.bytes() <= f.reader.cache.budget_bytes);

        f.reader.text(&a, &one, 5000).await.unwrap();
        f.reader.text(&a, &three, 5000).await.unwrap();
        assert_eq!(f.extractions(), 3, "one and three are still kept");
        f.reader.text(&a, &two, 5000).await.unwrap();
        assert_eq!(f.extractions(), 4, "two was forgotten");
    }

    #[tokio::test]
    async fn a_deleted_files_text_is_forgotten_and_only_in_its_tenant() {
        let f = fixture(1 << 20);
        let file = f.file("Refunds take 14 days.").await;
        let (a, b) = (ctx(TenantId::new()), ctx(TenantId::new()));
        f.reader.text(&a, &file, 100).await.unwrap();
        f.reader.text(&a, &file, 7).await.unwrap();
        f.reader.text(&b, &file, 100).await.unwrap();
        assert_eq!(f.extractions(), 3);

        f.reader.forget(&a, file.id);
        f.reader.text(&b, &file, 100).await.unwrap();
        assert_eq!(f.extractions(), 3, "the other tenant's entry is kept");
        let kept_for_b = f.reader.cache.bytes();
        f.reader.forget(&b, file.id);
        assert_eq!(
            f.reader.cache.bytes(),
            0,
            "both limits of a's, then b's, are gone"
        );
        assert!(kept_for_b > 0);
        f.reader.text(&a, &file, 100).await.unwrap();
        assert_eq!(f.extractions(), 4, "read again after being forgotten");
    }

    #[tokio::test]
    async fn with_a_budget_of_zero_every_answer_extracts_again() {
        let f = fixture(0);
        let file = f.file("Refunds take 14 days.").await;
        let a = ctx(TenantId::new());
        f.reader.text(&a, &file, 100).await.unwrap();
        f.reader.text(&a, &file, 100).await.unwrap();
        assert_eq!(f.extractions(), 2);
        assert_eq!(f.reader.cache.bytes(), 0);
    }
}
