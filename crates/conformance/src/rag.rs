//! Conformance cases for the RAG ports: collections, documents, chunks, the vector and
//! text indexes and the job queue. Vectors are small (8-d) so cases stay fast.

use crate::Ports;
use crate::fixtures::{every_page, tenant};
use std::collections::BTreeMap;
use std::sync::Arc;
use trellis_kernel::{PageRequest, TenantCtx};
use trellis_rag::index::{ChunkId, CollectionId, Embedding};
use trellis_rag::{
    Chunk, ChunkRepo, ChunkingSettings, ClaimedJob, Collection, CollectionPatch, CollectionRepo,
    DocumentFilter, DocumentId, DocumentRepo, DocumentStatus, EmbeddedChunk, EmbeddingModel, JobId,
    JobKind, JobQueue, ModelChangeRepo, ModelChangeStatus, NewCollection, NewDocument, RagError,
    SearchFilter, SourceType, Span, StatusChange, TextIndex, VectorIndex,
};

/// The RAG ports under test.
#[derive(Clone)]
pub struct RagPorts {
    pub collections: Arc<dyn CollectionRepo>,
    pub documents: Arc<dyn DocumentRepo>,
    pub chunks: Arc<dyn ChunkRepo>,
    pub vectors: Arc<dyn VectorIndex>,
    pub text: Arc<dyn TextIndex>,
    pub jobs: Arc<dyn JobQueue>,
    pub model_changes: Arc<dyn ModelChangeRepo>,
}

impl RagPorts {
    /// All RAG ports from one adapter value.
    pub fn from_one<A>(a: A) -> Self
    where
        A: CollectionRepo
            + DocumentRepo
            + ChunkRepo
            + VectorIndex
            + TextIndex
            + JobQueue
            + ModelChangeRepo
            + Clone,
    {
        Self {
            collections: Arc::new(a.clone()),
            documents: Arc::new(a.clone()),
            chunks: Arc::new(a.clone()),
            vectors: Arc::new(a.clone()),
            text: Arc::new(a.clone()),
            jobs: Arc::new(a.clone()),
            model_changes: Arc::new(a),
        }
    }
}

const DIM: u32 = 8;

fn model() -> EmbeddingModel {
    EmbeddingModel::new("test/8", DIM).unwrap()
}

/// A unit vector along axis `i` plus a little of axis `j`.
fn vector(i: usize, j: usize, w: f32) -> Embedding {
    let mut v = vec![0.0; DIM as usize];
    v[i] = 1.0;
    v[j] += w;
    Embedding::new(v).unwrap()
}

async fn collection(r: &RagPorts, ctx: &TenantCtx, name: &str) -> Collection {
    r.collections
        .insert(
            ctx,
            NewCollection {
                id: CollectionId::new(),
                name: name.into(),
                description: None,
                agent_id: None,
                source_type: SourceType::Upload,
                chunking: ChunkingSettings::default(),
                embedding_model: model(),
                created_by: None,
            },
        )
        .await
        .unwrap()
}

async fn document(
    r: &RagPorts,
    ctx: &TenantCtx,
    c: CollectionId,
    checksum: &str,
) -> trellis_rag::Document {
    let id = DocumentId::new();
    r.documents
        .insert(
            ctx,
            NewDocument {
                id,
                collection_id: c,
                filename: id.to_string(),
                original_name: format!("{checksum}.md"),
                mime_type: "text/markdown".into(),
                size_bytes: 10,
                checksum: checksum.into(),
                storage_key: format!("k/{id}"),
                source_type: SourceType::Upload,
                source_id: None,
                metadata: BTreeMap::from([("lang".to_owned(), "en".to_owned())]),
                uploaded_by: None,
            },
        )
        .await
        .unwrap()
}

fn chunk(
    d: &trellis_rag::Document,
    position: u32,
    content: &str,
    embedding: Embedding,
) -> EmbeddedChunk {
    EmbeddedChunk {
        chunk: Chunk {
            id: ChunkId::new(),
            document_id: d.id,
            collection_id: d.collection_id,
            position,
            content: content.into(),
            span: Span {
                start: position * 100,
                end: position * 100 + u32::try_from(content.len()).unwrap(),
                page: Some(1),
                section: Some("Intro".into()),
            },
            token_count: 5,
            source_type: SourceType::Upload,
            metadata: d.metadata.clone(),
        },
        embedding,
    }
}

pub async fn a_collection_reads_back_and_names_are_unique_per_tenant(p: &Ports, r: &RagPorts) {
    let (_, a, _) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let c = collection(r, &a, "Handbook").await;
    let got = r.collections.get(&a, c.id).await.unwrap();
    assert_eq!(
        (got.name.as_str(), got.embedding_model.clone()),
        ("Handbook", model())
    );
    let dup = r
        .collections
        .insert(
            &a,
            NewCollection {
                id: CollectionId::new(),
                name: "Handbook".into(),
                description: None,
                agent_id: None,
                source_type: SourceType::Manual,
                chunking: ChunkingSettings::default(),
                embedding_model: model(),
                created_by: None,
            },
        )
        .await;
    assert!(matches!(dup, Err(RagError::Conflict(_))), "{dup:?}");
    collection(r, &b, "Handbook").await;
    assert!(matches!(
        r.collections.get(&b, c.id).await,
        Err(RagError::NotFound(_))
    ));
    let patch = CollectionPatch {
        description: Some(Some("All the rules".into())),
        ..CollectionPatch::default()
    };
    assert!(matches!(
        r.collections.update(&b, c.id, patch.clone()).await,
        Err(RagError::NotFound(_))
    ));
    let updated = r.collections.update(&a, c.id, patch).await.unwrap();
    assert_eq!(updated.description.as_deref(), Some("All the rules"));
    assert_eq!(
        r.collections
            .list(&a, PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

pub async fn documents_are_found_by_checksum_and_status_changes_stick(p: &Ports, r: &RagPorts) {
    let (_, a, _) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let c = collection(r, &a, "Docs").await;
    let d = document(r, &a, c.id, "abc123").await;
    assert_eq!(d.status, DocumentStatus::Uploaded);
    let found = r
        .documents
        .find_by_checksum(&a, c.id, "abc123")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, d.id);
    assert!(
        r.documents
            .find_by_checksum(&b, c.id, "abc123")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        r.documents.get(&b, d.id).await,
        Err(RagError::NotFound(_))
    ));
    let done = r
        .documents
        .set_status(
            &a,
            d.id,
            StatusChange {
                status: DocumentStatus::Processed,
                error: None,
                processed_at: Some(chrono::Utc::now()),
                chunk_count: Some(3),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.chunk_count),
        (DocumentStatus::Processed, 3)
    );
    assert!(done.processed_at.is_some());
    let filter = DocumentFilter {
        collection: Some(c.id),
        status: Some(DocumentStatus::Processed),
    };
    assert_eq!(
        r.documents
            .list(&a, &filter, PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(
        r.documents
            .list(&b, &DocumentFilter::default(), PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Every field read back, by `get` and page by page through `list`, equals what the
/// writes returned (the Postgres adapter decodes these rows by position).
pub async fn every_field_of_a_document_reads_back_through_get_and_list_pages(
    p: &Ports,
    r: &RagPorts,
) {
    let (_, a, _) = tenant(p).await;
    let c = collection(r, &a, "Fields").await;
    let first = document(r, &a, c.id, "first").await;
    let failed = document(r, &a, c.id, "failed").await;
    let failed = r
        .documents
        .set_status(
            &a,
            failed.id,
            StatusChange {
                status: DocumentStatus::Error,
                error: Some("could not read page 3".into()),
                processed_at: Some(chrono::Utc::now()),
                chunk_count: Some(7),
            },
        )
        .await
        .unwrap();
    let third = document(r, &a, c.id, "third").await;
    let expected = vec![first, failed, third];
    for d in &expected {
        assert_eq!(&r.documents.get(&a, d.id).await.unwrap(), d);
    }
    let filter = DocumentFilter {
        collection: Some(c.id),
        status: None,
    };
    let pages = every_page(1, async |page| {
        r.documents.list(&a, &filter, page).await.unwrap()
    })
    .await;
    assert!(pages.iter().all(|p| p.items.len() <= 1));
    let listed: Vec<_> = pages.into_iter().flat_map(|p| p.items).collect();
    assert_eq!(listed, expected, "pages of one, oldest first, every field");
}

pub async fn cited_chunks_carry_their_documents_name_and_only_the_tenants(p: &Ports, r: &RagPorts) {
    let (_, a, _) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let c = collection(r, &a, "Docs").await;
    let d1 = document(r, &a, c.id, "first").await;
    let d2 = document(r, &a, c.id, "second").await;
    let gone = document(r, &a, c.id, "gone").await;
    let one = chunk(&d1, 0, "one", vector(0, 1, 0.1));
    let two = chunk(&d2, 0, "two", vector(1, 2, 0.1));
    let lost = chunk(&gone, 0, "lost", vector(2, 3, 0.1));
    for (d, ch) in [(&d1, &one), (&d2, &two), (&gone, &lost)] {
        r.chunks
            .replace_for_document(&a, d.id, vec![ch.clone()])
            .await
            .unwrap();
    }
    r.documents.delete(&a, gone.id).await.unwrap();
    let ids = [one.chunk.id, two.chunk.id, lost.chunk.id, ChunkId::new()];
    let mut cited = r.chunks.cited(&a, &ids).await.unwrap();
    cited.sort_by_key(|c| c.filename.clone());
    let got: Vec<(ChunkId, &str, &str)> = cited
        .iter()
        .map(|c| (c.chunk.id, c.chunk.content.as_str(), c.filename.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (one.chunk.id, "one", "first.md"),
            (two.chunk.id, "two", "second.md")
        ]
    );
    assert_eq!(cited[0].chunk, one.chunk);
    assert!(r.chunks.cited(&b, &ids).await.unwrap().is_empty());
    assert!(r.chunks.cited(&a, &[]).await.unwrap().is_empty());
}

pub async fn replacing_a_documents_chunks_never_duplicates_them(p: &Ports, r: &RagPorts) {
    let (_, a, _) = tenant(p).await;
    let c = collection(r, &a, "Docs").await;
    let d = document(r, &a, c.id, "x1").await;
    let first = vec![
        chunk(&d, 0, "alpha", vector(0, 1, 0.1)),
        chunk(&d, 1, "beta", vector(1, 2, 0.1)),
    ];
    r.chunks
        .replace_for_document(&a, d.id, first)
        .await
        .unwrap();
    let second = vec![
        chunk(&d, 0, "gamma", vector(2, 3, 0.1)),
        chunk(&d, 1, "delta", vector(3, 4, 0.1)),
        chunk(&d, 2, "epsilon", vector(4, 5, 0.1)),
    ];
    r.chunks
        .replace_for_document(&a, d.id, second)
        .await
        .unwrap();
    let stored = r.chunks.for_document(&a, d.id).await.unwrap();
    let contents: Vec<&str> = stored.iter().map(|c| c.content.as_str()).collect();
    assert_eq!(contents, vec!["gamma", "delta", "epsilon"]);
    // Old vectors are gone from the index as well.
    let hits = r
        .vectors
        .search(&a, &vector(0, 1, 0.1), &SearchFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(hits.len(), 3);
    let ids: Vec<ChunkId> = stored.iter().map(|c| c.id).collect();
    assert!(hits.iter().all(|h| ids.contains(&h.chunk)));
}

pub async fn vector_search_returns_the_exact_top_k_of_the_tenant_only(p: &Ports, r: &RagPorts) {
    let (_, a, _) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let ca = collection(r, &a, "A").await;
    let cb = collection(r, &b, "B").await;
    let da = document(r, &a, ca.id, "a").await;
    let db = document(r, &b, cb.id, "b").await;
    let a_chunks: Vec<EmbeddedChunk> = (0..6)
        .map(|i| {
            chunk(
                &da,
                i,
                &format!("a{i}"),
                vector(0, 1 + (i as usize % 7), 0.1 * i as f32),
            )
        })
        .collect();
    r.chunks
        .replace_for_document(&a, da.id, a_chunks.clone())
        .await
        .unwrap();
    // Tenant B has vectors closer to the query than any of A's.
    let b_chunks: Vec<EmbeddedChunk> = (0..6)
        .map(|i| chunk(&db, i, "b", vector(0, 1, 0.0)))
        .collect();
    r.chunks
        .replace_for_document(&b, db.id, b_chunks)
        .await
        .unwrap();

    let q = vector(0, 1, 0.0);
    let hits = r
        .vectors
        .search(&a, &q, &SearchFilter::default(), 3)
        .await
        .unwrap();
    assert_eq!(hits.len(), 3);
    let mut brute: Vec<(ChunkId, f32)> = a_chunks
        .iter()
        .map(|c| (c.chunk.id, c.embedding.cosine(&q)))
        .collect();
    brute.sort_by(|x, y| y.1.total_cmp(&x.1));
    for (hit, (id, score)) in hits.iter().zip(&brute) {
        assert_eq!(hit.chunk, *id);
        assert!((hit.score - score).abs() < 1e-4, "{} vs {score}", hit.score);
    }
}

pub async fn vector_search_honours_collection_source_and_metadata_filters(p: &Ports, r: &RagPorts) {
    let (_, a, _) = tenant(p).await;
    let c1 = collection(r, &a, "One").await;
    let c2 = collection(r, &a, "Two").await;
    let d1 = document(r, &a, c1.id, "d1").await;
    let d2 = document(r, &a, c2.id, "d2").await;
    r.chunks
        .replace_for_document(&a, d1.id, vec![chunk(&d1, 0, "one", vector(0, 1, 0.2))])
        .await
        .unwrap();
    r.chunks
        .replace_for_document(&a, d2.id, vec![chunk(&d2, 0, "two", vector(0, 1, 0.1))])
        .await
        .unwrap();
    let q = vector(0, 1, 0.0);
    let only_one = SearchFilter {
        collections: vec![c1.id],
        ..SearchFilter::default()
    };
    let hits = r.vectors.search(&a, &q, &only_one, 10).await.unwrap();
    assert_eq!(hits.len(), 1);
    let shopify = SearchFilter {
        source_types: vec![SourceType::Shopify],
        ..SearchFilter::default()
    };
    assert!(
        r.vectors
            .search(&a, &q, &shopify, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let german = SearchFilter {
        metadata: BTreeMap::from([("lang".to_owned(), "de".to_owned())]),
        ..SearchFilter::default()
    };
    assert!(
        r.vectors
            .search(&a, &q, &german, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let english = SearchFilter {
        metadata: BTreeMap::from([("lang".to_owned(), "en".to_owned())]),
        ..SearchFilter::default()
    };
    assert_eq!(
        r.vectors.search(&a, &q, &english, 10).await.unwrap().len(),
        2
    );
}

pub async fn text_search_ranks_matching_chunks_and_ignores_other_tenants(p: &Ports, r: &RagPorts) {
    let (_, a, _) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let ca = collection(r, &a, "A").await;
    let cb = collection(r, &b, "B").await;
    let da = document(r, &a, ca.id, "a").await;
    let db = document(r, &b, cb.id, "b").await;
    let refund = chunk(
        &da,
        0,
        "Refunds are issued within fourteen days of purchase.",
        vector(0, 1, 0.1),
    );
    let other = chunk(
        &da,
        1,
        "Shipping takes three to five days.",
        vector(1, 2, 0.1),
    );
    r.chunks
        .replace_for_document(&a, da.id, vec![refund.clone(), other])
        .await
        .unwrap();
    r.chunks
        .replace_for_document(
            &b,
            db.id,
            vec![chunk(&db, 0, "Refunds refunds refunds", vector(0, 1, 0.1))],
        )
        .await
        .unwrap();
    let hits = r
        .text
        .search(&a, "refunds purchase", &SearchFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(hits.first().map(|h| h.chunk), Some(refund.chunk.id));
    assert!(
        hits.iter()
            .all(|h| h.chunk != refund.chunk.id || h.score > 0.0)
    );
    let ids: Vec<ChunkId> = r
        .chunks
        .for_document(&b, db.id)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert!(hits.iter().all(|h| !ids.contains(&h.chunk)));
    assert!(
        r.text
            .search(&a, "\"&|!", &SearchFilter::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn text_search_reads_web_search_syntax_and_questions_alike_on_every_adapter(
    p: &Ports,
    r: &RagPorts,
) {
    let (_, a, _) = tenant(p).await;
    let c = collection(r, &a, "Syntax").await;
    let d = document(r, &a, c.id, "syntax").await;
    let texts = [
        "Refunds take five days for annual plans.",
        "Shipping takes three to five days.",
        "Annual plans renew every year.",
    ];
    let chunks: Vec<_> = texts
        .iter()
        .zip(0u32..)
        .map(|(t, i)| chunk(&d, i, t, vector(i as usize, i as usize + 1, 0.1)))
        .collect();
    r.chunks
        .replace_for_document(&a, d.id, chunks.clone())
        .await
        .unwrap();
    let id = |i: usize| chunks[i].chunk.id;
    let search = async |q: &str| -> Vec<ChunkId> {
        r.text
            .search(&a, q, &SearchFilter::default(), 10)
            .await
            .unwrap_or_else(|e| panic!("{q:?} failed: {e:#}"))
            .iter()
            .map(|h| h.chunk)
            .collect()
    };
    let set = |ids: Vec<ChunkId>| ids.into_iter().collect::<std::collections::HashSet<_>>();

    // Every word is required; `or` makes either enough; `-` excludes.
    assert_eq!(search("refunds DAYS").await, [id(0)]);
    assert_eq!(
        set(search("refunds or shipping").await),
        set(vec![id(0), id(1)])
    );
    assert_eq!(search("days -shipping").await, [id(0)]);
    // A query of exclusions alone matches every other chunk, equally: in id order.
    let mut others = vec![id(0), id(2)];
    others.sort();
    assert_eq!(search("-shipping").await, others);
    // Quotes ask for the words next to each other, in order.
    assert_eq!(set(search("\"five days\"").await), set(vec![id(0), id(1)]));
    assert!(search("\"days five\"").await.is_empty());
    // A question rewritten to match any of its words finds the chunks holding some of
    // them, the one holding the most first; words, not stems ("take" is not "takes").
    let question =
        trellis_kernel::search::any_word_query("How long do refunds take for annual plans?")
            .unwrap();
    let hits = search(&question).await;
    assert_eq!(set(hits.clone()), set(vec![id(0), id(2)]));
    assert_eq!(hits.first(), Some(&id(0)));
}

pub async fn deleting_a_document_or_collection_removes_its_chunks(p: &Ports, r: &RagPorts) {
    let (_, a, _) = tenant(p).await;
    let c = collection(r, &a, "Temp").await;
    let d1 = document(r, &a, c.id, "one").await;
    let d2 = document(r, &a, c.id, "two").await;
    r.chunks
        .replace_for_document(
            &a,
            d1.id,
            vec![chunk(&d1, 0, "first doc", vector(0, 1, 0.1))],
        )
        .await
        .unwrap();
    r.chunks
        .replace_for_document(
            &a,
            d2.id,
            vec![chunk(&d2, 0, "second doc", vector(0, 1, 0.2))],
        )
        .await
        .unwrap();
    r.documents.delete(&a, d1.id).await.unwrap();
    let q = vector(0, 1, 0.0);
    assert_eq!(
        r.vectors
            .search(&a, &q, &SearchFilter::default(), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(r.chunks.for_document(&a, d1.id).await.unwrap().is_empty());
    r.collections.delete(&a, c.id).await.unwrap();
    assert!(
        r.vectors
            .search(&a, &q, &SearchFilter::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        r.text
            .search(&a, "second", &SearchFilter::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        r.documents.get(&a, d2.id).await,
        Err(RagError::NotFound(_))
    ));
}

pub async fn a_claimed_job_is_not_handed_out_again_until_its_lease_expires(
    p: &Ports,
    r: &RagPorts,
) {
    let (_, a, _) = tenant(p).await;
    let doc = DocumentId::new();
    r.jobs
        .enqueue(&a, JobKind::ProcessDocument(doc))
        .await
        .unwrap();
    // Other tests share the queue, so claim until we find ours.
    let mut mine = None;
    for _ in 0..200 {
        match r
            .jobs
            .claim(chrono::Duration::milliseconds(300))
            .await
            .unwrap()
        {
            Some(j) if j.kind == JobKind::ProcessDocument(doc) => {
                mine = Some(j);
                break;
            }
            Some(other) => r
                .jobs
                .retry(&other, "not this test's", chrono::Utc::now())
                .await
                .unwrap(),
            None => break,
        }
    }
    let job = mine.expect("our job was claimable");
    assert_eq!((job.tenant_id, job.attempt), (a.tenant_id(), 1));
    // While leased, nobody else gets it.
    for _ in 0..20 {
        if let Some(j) = r.jobs.claim(chrono::Duration::seconds(30)).await.unwrap() {
            assert_ne!(j.id, job.id, "a leased job was handed out twice");
            r.jobs
                .retry(&j, "not this test's", chrono::Utc::now())
                .await
                .unwrap();
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let mut again = None;
    for _ in 0..200 {
        match r.jobs.claim(chrono::Duration::seconds(30)).await.unwrap() {
            Some(j) if j.id == job.id => {
                again = Some(j);
                break;
            }
            Some(other) => r
                .jobs
                .retry(&other, "not this test's", chrono::Utc::now())
                .await
                .unwrap(),
            None => break,
        }
    }
    let again = again.expect("an expired lease makes the job claimable again");
    assert_eq!(again.attempt, 2);
    r.jobs.complete(&again).await.unwrap();
}

/// Claims until `id` comes up (other tests share the queue; theirs go straight back).
async fn claim_job(r: &RagPorts, id: JobId, lease: chrono::Duration) -> Option<ClaimedJob> {
    for _ in 0..200 {
        match r.jobs.claim(lease).await.unwrap() {
            Some(j) if j.id == id => return Some(j),
            Some(other) => r
                .jobs
                .retry(&other, "not this test's", chrono::Utc::now())
                .await
                .unwrap(),
            None => return None,
        }
    }
    None
}

pub async fn a_renewed_lease_keeps_the_job_and_a_stale_claim_changes_nothing(
    p: &Ports,
    r: &RagPorts,
) {
    let (_, a, _) = tenant(p).await;
    let id = r
        .jobs
        .enqueue(&a, JobKind::ProcessDocument(DocumentId::new()))
        .await
        .unwrap();
    let short = chrono::Duration::milliseconds(300);
    let job = claim_job(r, id, short)
        .await
        .expect("our job was claimable");
    assert!(
        r.jobs
            .extend(&job, chrono::Duration::seconds(30))
            .await
            .unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        claim_job(r, id, short).await.is_none(),
        "a renewed lease was taken over"
    );

    // Now let a claim lapse and another worker take the job.
    let stale = job;
    assert!(r.jobs.extend(&stale, short).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let current = claim_job(r, id, chrono::Duration::seconds(30))
        .await
        .expect("a lapsed lease frees the job");
    assert_eq!(current.attempt, 2);
    assert!(
        !r.jobs
            .extend(&stale, chrono::Duration::seconds(30))
            .await
            .unwrap(),
        "the stale claim could renew"
    );
    r.jobs.fail(&stale, "stale worker").await.unwrap();
    r.jobs.complete(&stale).await.unwrap();
    // The current holder still owns it: renewing works and nobody else gets it.
    assert!(
        r.jobs
            .extend(&current, chrono::Duration::seconds(30))
            .await
            .unwrap()
    );
    assert!(claim_job(r, id, short).await.is_none());
    r.jobs.complete(&current).await.unwrap();
    assert!(
        !r.jobs.extend(&current, short).await.unwrap(),
        "a done job renewed"
    );
}

/// A 4-d unit vector along axis `i` (the "new model" of the model-change cases).
fn small(i: usize) -> Embedding {
    let mut v = vec![0.0; 4];
    v[i % 4] = 1.0;
    Embedding::new(v).unwrap()
}

pub async fn a_model_change_fills_a_shadow_index_and_switches_in_one_step(p: &Ports, r: &RagPorts) {
    let (_, a, _) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let c = collection(r, &a, "Move").await;
    let d = document(r, &a, c.id, "m").await;
    let chunks: Vec<EmbeddedChunk> = (0..3)
        .map(|i| chunk(&d, i, &format!("text {i}"), vector(i as usize, 7, 0.0)))
        .collect();
    r.chunks
        .replace_for_document(&a, d.id, chunks.clone())
        .await
        .unwrap();
    let target = EmbeddingModel::new("test/4", 4).unwrap();
    r.model_changes
        .begin(&a, c.id, target.clone())
        .await
        .unwrap();
    let coll = r.collections.get(&a, c.id).await.unwrap();
    let change = coll.model_change.expect("the change is recorded");
    assert_eq!(
        (change.target, change.status),
        (target.clone(), ModelChangeStatus::Running)
    );
    assert_eq!(coll.embedding_model, model(), "search keeps the old model");

    // Another tenant can neither see nor touch the change.
    assert!(matches!(
        r.model_changes.pending(&b, c.id, 10).await,
        Err(RagError::NotFound(_))
    ));
    assert!(matches!(
        r.model_changes.switch(&b, c.id).await,
        Err(RagError::NotFound(_))
    ));

    let mut pending = r.model_changes.pending(&a, c.id, 2).await.unwrap();
    assert_eq!(pending.len(), 2, "the limit is honoured");
    pending.extend(r.model_changes.pending(&a, c.id, 10).await.unwrap());
    let first: Vec<(ChunkId, Embedding)> = pending[..2]
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, small(i)))
        .collect();
    r.model_changes.store(&a, c.id, first).await.unwrap();
    let progress = r.model_changes.progress(&a, c.id).await.unwrap();
    assert_eq!((progress.embedded, progress.total), (2, 3));
    assert!(
        !r.model_changes.switch(&a, c.id).await.unwrap(),
        "switched with a chunk left to embed"
    );
    // Search still answers with the old vectors meanwhile.
    let hits = r
        .vectors
        .search(&a, &vector(0, 7, 0.0), &SearchFilter::default(), 3)
        .await
        .unwrap();
    assert_eq!(hits.len(), 3);

    let rest = r.model_changes.pending(&a, c.id, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    let last = rest[0].0;
    r.model_changes
        .store(&a, c.id, vec![(last, small(3))])
        .await
        .unwrap();
    assert!(r.model_changes.switch(&a, c.id).await.unwrap());
    let coll = r.collections.get(&a, c.id).await.unwrap();
    assert_eq!(coll.embedding_model, target);
    assert!(coll.model_change.is_none());
    // The new vectors answer now; the chunk stored with small(3) is the best match.
    let hits = r
        .vectors
        .search(&a, &small(3), &SearchFilter::default(), 3)
        .await
        .unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0].chunk, last);
    assert!((hits[0].score - 1.0).abs() < 1e-4);
    // And nothing answers in the old dimension any more.
    let old = r
        .vectors
        .search(&a, &vector(0, 7, 0.0), &SearchFilter::default(), 3)
        .await
        .unwrap();
    assert!(old.is_empty(), "old vectors still searchable: {old:?}");
}

pub async fn a_cancelled_or_failed_model_change_leaves_search_on_the_old_model(
    p: &Ports,
    r: &RagPorts,
) {
    let (_, a, _) = tenant(p).await;
    let c = collection(r, &a, "Stay").await;
    let d = document(r, &a, c.id, "s").await;
    let chunks: Vec<EmbeddedChunk> = (0..2)
        .map(|i| chunk(&d, i, "x", vector(i as usize, 7, 0.0)))
        .collect();
    r.chunks
        .replace_for_document(&a, d.id, chunks)
        .await
        .unwrap();
    let target = EmbeddingModel::new("test/4", 4).unwrap();
    r.model_changes
        .begin(&a, c.id, target.clone())
        .await
        .unwrap();
    let one = r.model_changes.pending(&a, c.id, 1).await.unwrap();
    r.model_changes
        .store(&a, c.id, vec![(one[0].0, small(0))])
        .await
        .unwrap();
    r.model_changes
        .fail(&a, c.id, "embedder down")
        .await
        .unwrap();
    let coll = r.collections.get(&a, c.id).await.unwrap();
    let change = coll.model_change.unwrap();
    assert_eq!(change.status, ModelChangeStatus::Failed);
    assert_eq!(change.error.as_deref(), Some("embedder down"));
    assert!(
        r.model_changes
            .pending(&a, c.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!r.model_changes.switch(&a, c.id).await.unwrap());

    // Retrying the same target resumes: the vector stored before the failure stays.
    r.model_changes.begin(&a, c.id, target).await.unwrap();
    assert_eq!(
        r.model_changes.progress(&a, c.id).await.unwrap().embedded,
        1
    );
    // Another target starts over.
    let other = EmbeddingModel::new("test/4b", 4).unwrap();
    r.model_changes.begin(&a, c.id, other).await.unwrap();
    assert_eq!(
        r.model_changes.progress(&a, c.id).await.unwrap().embedded,
        0
    );

    r.model_changes.cancel(&a, c.id).await.unwrap();
    let coll = r.collections.get(&a, c.id).await.unwrap();
    assert!(coll.model_change.is_none());
    assert_eq!(coll.embedding_model, model());
    let hits = r
        .vectors
        .search(&a, &vector(0, 7, 0.0), &SearchFilter::default(), 5)
        .await
        .unwrap();
    assert_eq!(hits.len(), 2);
}
