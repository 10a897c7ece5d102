//! Vector and full-text search on PostgreSQL: a tenant gets its own true top k however
//! small it is next to others (where plain HNSW + `WHERE tenant_id` comes up short),
//! big tenants go through HNSW without coming up short, and every filter is honoured.

use super::rag_support::{
    BIG_DIM, BigTenant, Rng, big_tenant, big_tenant_truth, big_tenant_vector, brute_force, chunk,
    collection, document, meta, rag_tenant, store_chunks, unit,
};
use super::support::{app_url, begin_in, owner_url, query, raw, stmt_with, store};
use sea_orm::ConnectionTrait;
use sea_orm::prelude::PgVector;
use std::collections::HashSet;
use std::time::Duration;
use trellis_kernel::TenantCtx;
use trellis_postgres::PgStore;
use trellis_rag::index::{ChunkId, Embedding};
use trellis_rag::{
    ChunkRepo, EmbeddedChunk, Scored, SearchFilter, SourceType, TextIndex, VectorIndex,
};

fn ids(hits: &[Scored]) -> Vec<ChunkId> {
    hits.iter().map(|h| h.chunk).collect()
}

async fn vector_search(
    store: &PgStore,
    ctx: &TenantCtx,
    q: &Embedding,
    filter: &SearchFilter,
    k: usize,
) -> Vec<Scored> {
    VectorIndex::search(store, ctx, q, filter, k).await.unwrap()
}

async fn text_search(
    store: &PgStore,
    ctx: &TenantCtx,
    q: &str,
    filter: &SearchFilter,
) -> Vec<Scored> {
    TextIndex::search(store, ctx, q, filter, 10).await.unwrap()
}

fn assert_best_first(hits: &[Scored]) {
    assert!(
        hits.windows(2).all(|w| w[0].score >= w[1].score),
        "not best first: {hits:?}"
    );
}

/// How many times the 384-dimension HNSW index has been scanned, as the statistics
/// system has it (other sessions' counts arrive when they flush, within seconds).
async fn hnsw_scans() -> i64 {
    let db = raw(&owner_url()).await;
    let rows = query(
        &db,
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'chunks_embedding_384_hnsw'",
    )
    .await;
    rows[0].try_get("", "idx_scan").unwrap()
}

#[tokio::test]
async fn a_small_tenant_gets_its_exact_top_k_where_plain_hnsw_comes_up_short() {
    let store = store().await;
    let big = big_tenant(&store).await;
    let ctx = rag_tenant(&store).await;
    let c = collection(&store, &ctx, BIG_DIM as u32).await;
    let d = document(&store, &ctx, c.id, SourceType::Upload, meta(&[])).await;
    let mut rng = Rng::new(10);
    let chunks: Vec<_> = (0..30)
        .map(|i| chunk(&d, i, "small tenant", rng.vector(BIG_DIM)))
        .collect();
    store_chunks(&store, &ctx, &d, chunks.clone()).await;
    // The small tenant asks about the big tenant's topic: the nearest rows of the whole
    // table are all the big tenant's, as for an off-topic question in a shared index.
    let q = unit(big_tenant_vector(&big, 7).await);

    let hits = vector_search(&store, &ctx, &q, &SearchFilter::default(), 10).await;
    assert_eq!(ids(&hits), brute_force(&q, &chunks, 10));
    for hit in &hits {
        let c = chunks.iter().find(|c| c.chunk.id == hit.chunk).unwrap();
        assert!((hit.score - c.embedding.cosine(&q)).abs() < 1e-5);
    }

    // The baseline: plain HNSW with pgvector's defaults (ef_search 40, no iterative
    // scan) and the tenant as a filter. The planner would rather sort this tenant's few
    // rows, so sorting is switched off to make it take the index, as it does on the big
    // tables of production.
    let db = raw(&app_url()).await;
    let txn = begin_in(&db, ctx.tenant_id()).await;
    txn.execute_unprepared("SET LOCAL enable_sort = off")
        .await
        .unwrap();
    let sql = "SELECT id FROM chunks WHERE tenant_id = $1 AND embedding_dim = 384
                ORDER BY embedding::vector(384) <=> $2::vector(384) LIMIT 10";
    let values = || {
        vec![
            ctx.tenant_id().as_uuid().into(),
            PgVector::from(q.as_slice().to_vec()).into(),
        ]
    };
    let plan = txn
        .query_all_raw(stmt_with(&format!("EXPLAIN {sql}"), values()))
        .await
        .unwrap();
    let plan: Vec<String> = plan
        .iter()
        .map(|r| r.try_get_by_index(0).unwrap())
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("chunks_embedding_384_hnsw")),
        "the baseline did not use HNSW:\n{}",
        plan.join("\n")
    );
    let baseline = txn.query_all_raw(stmt_with(sql, values())).await.unwrap();
    txn.commit().await.unwrap();
    assert!(
        baseline.len() < 10,
        "plain HNSW found {} of the small tenant's rows",
        baseline.len()
    );
}

/// Queries near stored vectors of the big tenant (a stored vector plus noise), one per
/// position.
async fn big_tenant_queries(big: &BigTenant, rng: &mut Rng, positions: &[i32]) -> Vec<Embedding> {
    let mut out = Vec::new();
    for &position in positions {
        let v = big_tenant_vector(big, position).await;
        out.push(unit(v.iter().map(|x| x + rng.next() * 0.5).collect()));
    }
    out
}

#[tokio::test]
async fn a_tenant_above_the_exact_scan_threshold_gets_k_results_through_hnsw() {
    let store = store().await;
    let big = big_tenant(&store).await;
    let mut rng = Rng::new(11);
    // Twenty questions spread over the clusters: HNSW on clustered data occasionally
    // walks into a neighbouring cluster and misses a whole top k (measured at about
    // one query in a few hundred with this ef_search, more on a graph built under the
    // load of the full suite), so the bar is recall over many queries, not each one.
    let positions: Vec<i32> = (0..20).map(|i| 3 + i * 1_049).collect();
    let queries = big_tenant_queries(&big, &mut rng, &positions).await;
    let scans_before = hnsw_scans().await;

    let (mut found, mut wanted) = (0, 0);
    for q in &queries {
        let hits = vector_search(&store, &big.ctx, q, &SearchFilter::default(), 10).await;
        assert_eq!(hits.len(), 10);
        assert_best_first(&hits);
        let truth = big_tenant_truth(&big, q.as_slice(), "", 10).await;
        found += ids(&hits).iter().filter(|id| truth.contains(id)).count();
        wanted += truth.len();
    }
    // Approximate, but on clustered data it should miss next to nothing.
    assert!(found * 10 >= wanted * 9, "recall {found}/{wanted}");

    // The search went through the HNSW index (the counter is shared with other tests,
    // so this only shows it was used at all; statistics arrive within seconds).
    let mut scans = hnsw_scans().await;
    for _ in 0..30 {
        if scans > scans_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        scans = hnsw_scans().await;
    }
    assert!(scans > scans_before, "the HNSW index was never scanned");
}

#[tokio::test]
async fn filters_on_a_big_tenant_still_yield_k_matching_results() {
    let store = store().await;
    let big = big_tenant(&store).await;
    let mut rng = Rng::new(12);
    // A quarter of the rows: odd positions are `manual`, and group 1 is a subset of them.
    let filter = SearchFilter {
        collections: vec![big.collection],
        source_types: vec![SourceType::Manual],
        metadata: meta(&[("group", "1")]),
    };
    let (mut found, mut wanted) = (0, 0);
    // Many questions for the same reason as above.
    let positions: Vec<i32> = (0..12).map(|i| 500 + i * 1_699).collect();
    for q in big_tenant_queries(&big, &mut rng, &positions).await {
        let hits = vector_search(&store, &big.ctx, &q, &filter, 10).await;
        assert_eq!(hits.len(), 10);
        assert_best_first(&hits);
        for c in store.get_many(&big.ctx, &ids(&hits)).await.unwrap() {
            assert_eq!(c.source_type, SourceType::Manual);
            assert_eq!(c.metadata.get("group").map(String::as_str), Some("1"));
        }
        let truth = big_tenant_truth(
            &big,
            q.as_slice(),
            r#"AND source_type = 'manual' AND metadata @> '{"group": "1"}'"#,
            10,
        )
        .await;
        found += ids(&hits).iter().filter(|id| truth.contains(id)).count();
        wanted += truth.len();
    }
    assert!(found * 10 >= wanted * 9, "recall {found}/{wanted}");

    // A filter nothing matches walks the graph in vain, then falls back to the exact
    // scan, which finds nothing either: an empty answer, not an error.
    let none = SearchFilter {
        metadata: meta(&[("group", "9")]),
        ..SearchFilter::default()
    };
    let q = unit(big_tenant_vector(&big, 1).await);
    assert!(
        vector_search(&store, &big.ctx, &q, &none, 10)
            .await
            .is_empty()
    );
}

/// A tenant with two collections of dimension 8 and three documents whose chunks say
/// which document they are in.
struct Library {
    ctx: TenantCtx,
    manuals: trellis_rag::index::CollectionId,
    chunks: Vec<EmbeddedChunk>,
}

async fn library(store: &PgStore) -> Library {
    let ctx = rag_tenant(store).await;
    let manuals = collection(store, &ctx, 8).await;
    let faq = collection(store, &ctx, 8).await;
    let docs = [
        document(
            store,
            &ctx,
            manuals.id,
            SourceType::Upload,
            meta(&[("lang", "en")]),
        )
        .await,
        document(
            store,
            &ctx,
            manuals.id,
            SourceType::Manual,
            meta(&[("lang", "de")]),
        )
        .await,
        document(
            store,
            &ctx,
            faq.id,
            SourceType::Upload,
            meta(&[("lang", "en"), ("v", "2")]),
        )
        .await,
    ];
    let words = ["apple banana", "apple cherry", "apple durian"];
    let mut rng = Rng::new(13);
    let mut chunks = Vec::new();
    for (doc, word) in docs.iter().zip(words) {
        let of_doc: Vec<_> = (0..6).map(|i| chunk(doc, i, word, rng.vector(8))).collect();
        chunks.extend(store_chunks(store, &ctx, doc, of_doc).await);
    }
    Library {
        ctx,
        manuals: manuals.id,
        chunks,
    }
}

impl Library {
    fn matching(&self, filter: &SearchFilter) -> Vec<EmbeddedChunk> {
        self.chunks
            .iter()
            .filter(|c| {
                (filter.collections.is_empty()
                    || filter.collections.contains(&c.chunk.collection_id))
                    && (filter.source_types.is_empty()
                        || filter.source_types.contains(&c.chunk.source_type))
                    && filter
                        .metadata
                        .iter()
                        .all(|(k, v)| c.chunk.metadata.get(k) == Some(v))
            })
            .cloned()
            .collect()
    }
}

#[tokio::test]
async fn vector_and_text_search_honour_collection_source_type_and_metadata_filters() {
    let store = store().await;
    let lib = library(&store).await;
    let filters = [
        SearchFilter::default(),
        SearchFilter {
            collections: vec![lib.manuals],
            ..SearchFilter::default()
        },
        SearchFilter {
            source_types: vec![SourceType::Manual],
            ..SearchFilter::default()
        },
        SearchFilter {
            metadata: meta(&[("lang", "en")]),
            ..SearchFilter::default()
        },
        SearchFilter {
            collections: vec![lib.manuals],
            source_types: vec![SourceType::Upload, SourceType::Manual],
            metadata: meta(&[("lang", "en")]),
        },
        SearchFilter {
            metadata: meta(&[("lang", "en"), ("v", "2")]),
            ..SearchFilter::default()
        },
        SearchFilter {
            source_types: vec![SourceType::Wordpress],
            ..SearchFilter::default()
        },
    ];
    let q = lib.chunks[4].embedding.clone();
    for filter in &filters {
        let expected = lib.matching(filter);
        let hits = vector_search(&store, &lib.ctx, &q, filter, 5).await;
        assert_eq!(
            ids(&hits),
            brute_force(&q, &expected, 5),
            "vector, {filter:?}"
        );

        let hits = text_search(&store, &lib.ctx, "apple", filter).await;
        let got: HashSet<ChunkId> = ids(&hits).into_iter().collect();
        let want: HashSet<ChunkId> = expected.iter().take(10).map(|c| c.chunk.id).collect();
        assert_eq!(got.len(), expected.len().min(10), "text, {filter:?}");
        if expected.len() <= 10 {
            assert_eq!(got, want, "text, {filter:?}");
        }
        assert!(
            got.iter()
                .all(|id| expected.iter().any(|c| c.chunk.id == *id))
        );
    }
}

#[tokio::test]
async fn text_search_ranks_the_chunk_with_the_query_words_first() {
    let store = store().await;
    let ctx = rag_tenant(&store).await;
    let c = collection(&store, &ctx, 8).await;
    let d = document(&store, &ctx, c.id, SourceType::Upload, meta(&[])).await;
    let mut rng = Rng::new(14);
    let texts = [
        "The weather was nice today, and the invoice can wait.",
        "Invoice INV-2041 is overdue: the overdue invoice must be paid this week.",
        "Nothing to see here.",
        "Überfällige Rechnung: bitte zahlen.",
    ];
    let chunks: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| chunk(&d, i as u32, t, rng.vector(8)))
        .collect();
    store_chunks(&store, &ctx, &d, chunks.clone()).await;
    let all = SearchFilter::default();

    let hits = text_search(&store, &ctx, "overdue invoice", &all).await;
    assert_eq!(ids(&hits), [chunks[1].chunk.id]);
    assert!(hits[0].score > 0.0);
    let hits = text_search(&store, &ctx, "invoice", &all).await;
    assert_eq!(ids(&hits), [chunks[1].chunk.id, chunks[0].chunk.id]);
    assert_best_first(&hits);
    let hits = text_search(&store, &ctx, "weather or Überfällige", &all).await;
    let got: HashSet<_> = ids(&hits).into_iter().collect();
    assert_eq!(got, HashSet::from([chunks[0].chunk.id, chunks[3].chunk.id]));
    let hits = text_search(&store, &ctx, "invoice -overdue", &all).await;
    assert_eq!(ids(&hits), [chunks[0].chunk.id]);
    // Words, not substrings: 'simple' neither stems nor drops stop words.
    assert!(text_search(&store, &ctx, "invoices", &all).await.is_empty());
    assert_eq!(text_search(&store, &ctx, "the", &all).await.len(), 2);
}

#[tokio::test]
async fn a_query_that_parses_to_nothing_returns_no_hits_rather_than_an_error() {
    let store = store().await;
    let lib = library(&store).await;
    for garbage in [r#""&|!"#, "!!!", "-", "", "   ", "&", "'", "\0", "():*"] {
        let hits = TextIndex::search(&store, &lib.ctx, garbage, &SearchFilter::default(), 10)
            .await
            .unwrap_or_else(|e| panic!("{garbage:?} failed: {e:#}"));
        assert!(hits.is_empty(), "{garbage:?} found {hits:?}");
    }
    // Punctuation around real words is ignored, not an error.
    let hits = text_search(
        &store,
        &lib.ctx,
        r#""apple" & | banana!"#,
        &SearchFilter::default(),
    )
    .await;
    assert_eq!(hits.len(), 6);
}

#[tokio::test]
async fn vectors_of_another_dimension_are_never_compared() {
    let store = store().await;
    let ctx = rag_tenant(&store).await;
    let small = collection(&store, &ctx, 4).await;
    let wide = collection(&store, &ctx, 8).await;
    let mut rng = Rng::new(15);
    let d4 = document(&store, &ctx, small.id, SourceType::Upload, meta(&[])).await;
    let d8 = document(&store, &ctx, wide.id, SourceType::Upload, meta(&[])).await;
    let four = store_chunks(
        &store,
        &ctx,
        &d4,
        vec![chunk(&d4, 0, "four", rng.vector(4))],
    )
    .await;
    store_chunks(
        &store,
        &ctx,
        &d8,
        vec![chunk(&d8, 0, "eight", rng.vector(8))],
    )
    .await;

    let q = unit(rng.vector(4));
    let hits = vector_search(&store, &ctx, &q, &SearchFilter::default(), 10).await;
    assert_eq!(ids(&hits), [four[0].chunk.id]);
    // Asking the 8-dimensional collection with a 4-dimensional vector finds nothing.
    let only_wide = SearchFilter {
        collections: vec![wide.id],
        ..SearchFilter::default()
    };
    assert!(
        vector_search(&store, &ctx, &q, &only_wide, 10)
            .await
            .is_empty()
    );
    assert!(
        vector_search(&store, &ctx, &q, &only_wide, 0)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_tenant_never_finds_another_tenants_chunks() {
    let store = store().await;
    let lib = library(&store).await;
    let other = rag_tenant(&store).await;
    let q = lib.chunks[0].embedding.clone();
    assert!(
        vector_search(&store, &other, &q, &SearchFilter::default(), 10)
            .await
            .is_empty()
    );
    assert!(
        text_search(&store, &other, "apple", &SearchFilter::default())
            .await
            .is_empty()
    );
    // Not even when naming the other tenant's collection.
    let theirs = SearchFilter {
        collections: vec![lib.manuals],
        ..SearchFilter::default()
    };
    assert!(
        vector_search(&store, &other, &q, &theirs, 10)
            .await
            .is_empty()
    );
    assert!(
        text_search(&store, &other, "apple", &theirs)
            .await
            .is_empty()
    );
    assert!(
        store
            .get_many(&other, &[lib.chunks[0].chunk.id])
            .await
            .unwrap()
            .is_empty()
    );
}
