//! The in-process vector replica (`PgVectorCache`): it answers exactly what an exact
//! scan of Postgres would, sees every committed insert, delete and vector change at
//! once (also writes made outside it, as by another app instance), gives a big tenant
//! its true top k even for questions far from its data, and stays within its budget.

use super::rag_support::{
    BIG_DIM, Rng, big_tenant, big_tenant_truth, big_tenant_vector, brute_force, chunk, collection,
    document, meta, rag_tenant, store_chunks, unit,
};
use super::support::{app_url, begin_in, raw, stmt_with, store};
use sea_orm::prelude::PgVector;
use trellis_kernel::TenantCtx;
use trellis_postgres::PgVectorCache;
use trellis_rag::index::{ChunkId, Embedding};
use trellis_rag::{DocumentRepo, EmbeddedChunk, SearchFilter, SourceType, VectorIndex};

const DIM: usize = 16;

async fn search(
    cache: &PgVectorCache,
    ctx: &TenantCtx,
    q: &Embedding,
    filter: &SearchFilter,
) -> Vec<ChunkId> {
    VectorIndex::search(cache, ctx, q, filter, 10)
        .await
        .unwrap()
        .iter()
        .map(|h| h.chunk)
        .collect()
}

/// A tenant with one collection and a document of `n` random chunks.
async fn tenant_with_chunks(
    store: &trellis_postgres::PgStore,
    seed: u64,
    n: u32,
) -> (TenantCtx, Vec<EmbeddedChunk>, Rng) {
    let ctx = rag_tenant(store).await;
    let c = collection(store, &ctx, DIM as u32).await;
    let d = document(store, &ctx, c.id, SourceType::Upload, meta(&[])).await;
    let mut rng = Rng::new(seed);
    let chunks: Vec<_> = (0..n)
        .map(|i| chunk(&d, i, "replica", rng.vector(DIM)))
        .collect();
    let chunks = store_chunks(store, &ctx, &d, chunks).await;
    (ctx, chunks, rng)
}

#[tokio::test]
async fn the_replica_answers_like_an_exact_scan_and_sees_new_and_deleted_chunks_at_once() {
    let store = store().await;
    let cache = PgVectorCache::new(store.clone(), 100_000);
    let (ctx, mut all, mut rng) = tenant_with_chunks(&store, 21, 40).await;
    let q = unit(rng.vector(DIM));
    let everything = SearchFilter::default();

    assert_eq!(
        search(&cache, &ctx, &q, &everything).await,
        brute_force(&q, &all, 10)
    );
    assert_eq!(cache.held_vectors(), 40);

    // A second document, written straight to Postgres (as another app instance would),
    // with chunks right next to the query: the very next search returns them.
    let c = all[0].chunk.collection_id;
    let d2 = document(&store, &ctx, c, SourceType::Upload, meta(&[])).await;
    let near: Vec<_> = (0..5)
        .map(|i| {
            let v = q.as_slice().iter().map(|x| x + rng.next() * 0.01).collect();
            chunk(&d2, i, "near", v)
        })
        .collect();
    store_chunks(&store, &ctx, &d2, near.clone()).await;
    all.extend(near.iter().cloned());
    let hits = search(&cache, &ctx, &q, &everything).await;
    assert_eq!(hits, brute_force(&q, &all, 10));
    assert!(near.iter().all(|c| hits.contains(&c.chunk.id)));
    assert_eq!(cache.held_vectors(), 45);

    // Deleting that document: its chunks are never returned again.
    DocumentRepo::delete(&store, &ctx, d2.id).await.unwrap();
    all.retain(|c| c.chunk.document_id != d2.id);
    let hits = search(&cache, &ctx, &q, &everything).await;
    assert_eq!(hits, brute_force(&q, &all, 10));
    assert!(near.iter().all(|c| !hits.contains(&c.chunk.id)));
    assert_eq!(cache.held_vectors(), 40);
}

#[tokio::test]
async fn a_vector_changed_in_postgres_is_searched_with_its_new_value() {
    let store = store().await;
    let cache = PgVectorCache::new(store.clone(), 100_000);
    let (ctx, all, mut rng) = tenant_with_chunks(&store, 22, 30).await;
    let q = unit(rng.vector(DIM));
    let worst = *brute_force(&q, &all, 30).last().unwrap();
    assert!(
        !search(&cache, &ctx, &q, &SearchFilter::default())
            .await
            .contains(&worst)
    );

    // What a model switch does: the stored vector is replaced in place.
    let db = raw(&app_url()).await;
    let txn = begin_in(&db, ctx.tenant_id()).await;
    use sea_orm::ConnectionTrait as _;
    txn.execute_raw(stmt_with(
        "UPDATE chunks SET embedding = $1 WHERE tenant_id = $2 AND id = $3",
        vec![
            PgVector::from(q.as_slice().to_vec()).into(),
            ctx.tenant_id().as_uuid().into(),
            worst.as_uuid().into(),
        ],
    ))
    .await
    .unwrap();
    txn.commit().await.unwrap();

    let hits = search(&cache, &ctx, &q, &SearchFilter::default()).await;
    assert_eq!(hits[0], worst, "the changed vector is now the best match");
}

#[tokio::test]
async fn tenants_never_see_each_others_vectors_through_the_replica() {
    let store = store().await;
    let cache = PgVectorCache::new(store.clone(), 100_000);
    let (a, a_chunks, mut rng) = tenant_with_chunks(&store, 23, 20).await;
    let (b, b_chunks, _) = tenant_with_chunks(&store, 24, 20).await;
    let q = unit(rng.vector(DIM));
    let a_hits = search(&cache, &a, &q, &SearchFilter::default()).await;
    let b_hits = search(&cache, &b, &q, &SearchFilter::default()).await;
    assert_eq!(a_hits, brute_force(&q, &a_chunks, 10));
    assert_eq!(b_hits, brute_force(&q, &b_chunks, 10));
    assert!(a_hits.iter().all(|id| !b_hits.contains(id)));
}

#[tokio::test]
async fn a_tenant_larger_than_the_budget_is_searched_in_postgres_with_the_same_answer() {
    let store = store().await;
    let cache = PgVectorCache::new(store.clone(), 25);
    let (ctx, all, mut rng) = tenant_with_chunks(&store, 25, 40).await;
    let q = unit(rng.vector(DIM));
    assert_eq!(
        search(&cache, &ctx, &q, &SearchFilter::default()).await,
        brute_force(&q, &all, 10)
    );
    assert_eq!(cache.held_vectors(), 0);
}

#[tokio::test]
async fn the_least_recently_searched_tenant_makes_room_and_is_reloaded_when_asked_again() {
    let store = store().await;
    let cache = PgVectorCache::new(store.clone(), 50);
    let (a, a_chunks, mut rng) = tenant_with_chunks(&store, 26, 30).await;
    let (b, b_chunks, _) = tenant_with_chunks(&store, 27, 30).await;
    let q = unit(rng.vector(DIM));
    search(&cache, &a, &q, &SearchFilter::default()).await;
    assert_eq!(
        search(&cache, &b, &q, &SearchFilter::default()).await,
        brute_force(&q, &b_chunks, 10)
    );
    assert!(cache.held_vectors() <= 50);
    assert_eq!(
        search(&cache, &a, &q, &SearchFilter::default()).await,
        brute_force(&q, &a_chunks, 10)
    );
    assert!(cache.held_vectors() <= 50);
}

#[tokio::test]
async fn attribute_filters_are_honoured_by_falling_back_to_postgres() {
    let store = store().await;
    let cache = PgVectorCache::new(store.clone(), 100_000);
    let ctx = rag_tenant(&store).await;
    let c = collection(&store, &ctx, DIM as u32).await;
    let manual = document(
        &store,
        &ctx,
        c.id,
        SourceType::Manual,
        meta(&[("lang", "de")]),
    )
    .await;
    let upload = document(&store, &ctx, c.id, SourceType::Upload, meta(&[])).await;
    let mut rng = Rng::new(28);
    let m: Vec<_> = (0..12)
        .map(|i| chunk(&manual, i, "m", rng.vector(DIM)))
        .collect();
    let u: Vec<_> = (0..12)
        .map(|i| chunk(&upload, i, "u", rng.vector(DIM)))
        .collect();
    store_chunks(&store, &ctx, &manual, m.clone()).await;
    store_chunks(&store, &ctx, &upload, u).await;
    let q = unit(rng.vector(DIM));
    let by_source = SearchFilter {
        source_types: vec![SourceType::Manual],
        ..SearchFilter::default()
    };
    let by_metadata = SearchFilter {
        metadata: meta(&[("lang", "de")]),
        ..SearchFilter::default()
    };
    assert_eq!(
        search(&cache, &ctx, &q, &by_source).await,
        brute_force(&q, &m, 10)
    );
    assert_eq!(
        search(&cache, &ctx, &q, &by_metadata).await,
        brute_force(&q, &m, 10)
    );
}

#[tokio::test]
async fn a_big_tenant_gets_its_exact_top_k_even_for_questions_far_from_its_data() {
    let store = store().await;
    let big = big_tenant(&store).await;
    let cache = PgVectorCache::new(store.clone(), 100_000);
    let mut rng = Rng::new(29);
    // Off-topic questions (random directions, far from every centroid) are where one
    // shared HNSW graph loses a tenant's true neighbours; and two on-topic ones.
    let mut queries: Vec<Embedding> = (0..6).map(|_| unit(rng.vector(BIG_DIM))).collect();
    for position in [11, 17_001] {
        let v = big_tenant_vector(&big, position).await;
        queries.push(unit(v.iter().map(|x| x + rng.next() * 0.5).collect()));
    }
    for q in &queries {
        let hits = search(&cache, &big.ctx, q, &SearchFilter::default()).await;
        let truth = big_tenant_truth(&big, q.as_slice(), "", 10).await;
        // As sets: f32 here and f64 in Postgres may order a near-tie differently.
        let mut hits_sorted = hits.clone();
        hits_sorted.sort();
        let mut truth_sorted = truth.clone();
        truth_sorted.sort();
        assert_eq!(hits_sorted, truth_sorted, "recall below 1 for {hits:?}");
    }
}

#[tokio::test]
async fn the_generation_check_puts_the_callers_tenant_scope_back() {
    use sea_orm::ConnectionTrait as _;
    let store = store().await;
    let (a, _, _) = tenant_with_chunks(&store, 30, 3).await;
    let (b, _, _) = tenant_with_chunks(&store, 31, 3).await;
    let db = raw(&app_url()).await;
    let txn = begin_in(&db, a.tenant_id()).await;
    let generation = txn
        .query_one_raw(stmt_with(
            "SELECT generation FROM trellis_vector_generation_of($1)",
            vec![b.tenant_id().as_uuid().into()],
        ))
        .await
        .unwrap()
        .unwrap();
    let generation: i64 = generation.try_get("", "generation").unwrap();
    assert!(generation > 0, "b's chunks advanced its generation");
    let scope = txn
        .query_one_raw(stmt_with(
            "SELECT current_setting('trellis.tenant_id') AS t",
            vec![],
        ))
        .await
        .unwrap()
        .unwrap();
    let scope: String = scope.try_get("", "t").unwrap();
    txn.commit().await.unwrap();
    assert_eq!(scope, a.tenant_id().as_uuid().to_string());
}
