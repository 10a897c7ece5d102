//! Full-text search through the replica (`PgVectorCache` as `TextIndex`): it returns
//! exactly what Postgres's direct search returns — the same chunks, ranks and order —
//! for every kind of query a search box produces, sees new and deleted chunks at once,
//! honours every filter, and never matches another tenant's chunks.

use super::rag_support::{Rng, chunk, collection, document, meta, rag_tenant, store_chunks};
use super::support::store;
use trellis_kernel::TenantCtx;
use trellis_postgres::{PgStore, PgVectorCache};
use trellis_rag::{DocumentRepo, Scored, SearchFilter, SourceType, TextIndex};

const DIM: usize = 8;

const TEXTS: [&str; 10] = [
    "How to reset your password from the login page",
    "Password rules: at least twelve characters",
    "Reset the router by holding the button for ten seconds",
    "Billing happens on the first day of each month",
    "Invoices can be downloaded from the billing page",
    "The router's lights show whether it's online",
    "Contact support at help@example.com or call us",
    "Two-factor authentication protects your account",
    "Reset password emails expire after one hour",
    "Refunds for annual plans are prorated",
];

/// Queries as users type them: words (AND), `or`, quoted phrases, negation, only
/// negation, punctuation only, apostrophes and hyphens, addresses, words nowhere.
const QUERIES: [&str; 14] = [
    "reset password",
    "reset",
    "router or billing",
    "\"reset your password\"",
    "reset -router",
    "-router",
    "?!,",
    "router's",
    "two-factor",
    "help@example.com",
    "PASSWORD Reset",
    "nothing matches this",
    "reset or \"billing page\" -invoices",
    "",
];

async fn text(index: &dyn TextIndex, ctx: &TenantCtx, q: &str, f: &SearchFilter) -> Vec<Scored> {
    index.search(ctx, q, f, 10).await.unwrap()
}

/// A tenant whose one upload document holds `TEXTS`.
async fn help_centre(store: &PgStore) -> (TenantCtx, trellis_rag::Document) {
    let ctx = rag_tenant(store).await;
    let c = collection(store, &ctx, DIM as u32).await;
    let d = document(
        store,
        &ctx,
        c.id,
        SourceType::Upload,
        meta(&[("lang", "en")]),
    )
    .await;
    let mut rng = Rng::new(41);
    let chunks = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| chunk(&d, i as u32, t, rng.vector(DIM)))
        .collect();
    store_chunks(store, &ctx, &d, chunks).await;
    (ctx, d)
}

#[tokio::test]
async fn every_kind_of_query_gets_exactly_what_postgres_returns_directly() {
    let store = store().await;
    let cache = PgVectorCache::new(store.clone(), 100_000);
    let (ctx, _) = help_centre(&store).await;
    let all = SearchFilter::default();
    let mut matched = 0;
    for q in QUERIES {
        let direct = text(&store, &ctx, q, &all).await;
        let replica = text(&cache, &ctx, q, &all).await;
        assert_eq!(replica, direct, "query {q:?}");
        matched += usize::from(!direct.is_empty());
    }
    // The comparison means something only if most queries find chunks.
    assert!(matched >= 9, "only {matched} queries matched anything");
    assert!(
        cache.held_vectors() > 0,
        "the replica was never loaded: the answers came from Postgres alone"
    );
}

#[tokio::test]
async fn new_and_deleted_chunks_are_found_and_forgotten_at_once() {
    let store = store().await;
    let cache = PgVectorCache::new(store.clone(), 100_000);
    let (ctx, d) = help_centre(&store).await;
    let all = SearchFilter::default();
    assert!(text(&cache, &ctx, "warranty", &all).await.is_empty());

    // Written straight to Postgres, as another app instance would.
    let d2 = document(&store, &ctx, d.collection_id, SourceType::Manual, meta(&[])).await;
    let mut rng = Rng::new(42);
    let added = store_chunks(
        &store,
        &ctx,
        &d2,
        vec![chunk(
            &d2,
            0,
            "The warranty lasts two years",
            rng.vector(DIM),
        )],
    )
    .await;
    let hits = text(&cache, &ctx, "warranty", &all).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].chunk, added[0].chunk.id);

    DocumentRepo::delete(&store, &ctx, d2.id).await.unwrap();
    assert!(text(&cache, &ctx, "warranty", &all).await.is_empty());
    assert_eq!(
        text(&cache, &ctx, "reset password", &all).await,
        text(&store, &ctx, "reset password", &all).await
    );
}

#[tokio::test]
async fn collection_source_type_and_metadata_filters_are_honoured() {
    let store = store().await;
    let cache = PgVectorCache::new(store.clone(), 100_000);
    let (ctx, d) = help_centre(&store).await;
    let other = collection(&store, &ctx, DIM as u32).await;
    let d2 = document(
        &store,
        &ctx,
        other.id,
        SourceType::Manual,
        meta(&[("lang", "de")]),
    )
    .await;
    let mut rng = Rng::new(43);
    store_chunks(
        &store,
        &ctx,
        &d2,
        vec![chunk(&d2, 0, "Reset password in German", rng.vector(DIM))],
    )
    .await;
    let filters = [
        SearchFilter {
            collections: vec![d.collection_id],
            ..SearchFilter::default()
        },
        SearchFilter {
            collections: vec![other.id],
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
    ];
    for f in &filters {
        let direct = text(&store, &ctx, "reset password", f).await;
        assert!(!direct.is_empty(), "{f:?} matches something");
        assert_eq!(
            text(&cache, &ctx, "reset password", f).await,
            direct,
            "{f:?}"
        );
    }
}

#[tokio::test]
async fn another_tenants_chunks_never_match_through_the_replica() {
    let store = store().await;
    let cache = PgVectorCache::new(store.clone(), 100_000);
    let (a, _) = help_centre(&store).await;
    let (b, _) = help_centre(&store).await;
    let all = SearchFilter::default();
    let a_hits = text(&cache, &a, "reset password", &all).await;
    let b_hits = text(&cache, &b, "reset password", &all).await;
    assert_eq!(a_hits.len(), 2);
    assert_eq!(b_hits.len(), 2);
    let a_ids: Vec<_> = a_hits.iter().map(|h| h.chunk).collect();
    assert!(b_hits.iter().all(|h| !a_ids.contains(&h.chunk)));
    assert_eq!(a_hits, text(&store, &a, "reset password", &all).await);
}
