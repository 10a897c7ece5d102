//! Behaviour of the in-process vector index through its public API: exactness on small
//! partitions, tenant isolation, collection filters, thresholds, deletes and inserts seen
//! at once, and graph partitions that never answer short of k.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use std::collections::HashSet;
use std::sync::Arc;

use trellis_kernel::TenantId;
use trellis_rag::index::synth::{SynthConfig, TenantData, brute_force_top_k};
use trellis_rag::index::{ChunkId, CollectionId, Embedding, IndexConfig, IndexError, VectorIndex};

const DIM: usize = 32;

fn embedding(v: &[f32]) -> Embedding {
    Embedding::new(v.to_vec()).unwrap()
}

/// One tenant of `n` vectors from the synthetic generator, with its queries.
fn tenant_data(seed: u64, n: usize) -> (TenantData, Vec<Vec<f32>>) {
    let mut config = SynthConfig::new(seed, n, 1);
    config.dimension = DIM;
    config.queries = 16;
    let data = config.generate();
    let queries = data.queries.iter().map(|q| q.vector.clone()).collect();
    (data.tenants.into_iter().next().unwrap(), queries)
}

fn load(index: &VectorIndex, tenant: &TenantData, collection: CollectionId) {
    let items: Vec<(ChunkId, Embedding)> = (0..tenant.len())
        .map(|i| (tenant.chunks[i], embedding(tenant.vector(i))))
        .collect();
    for batch in items.chunks(700) {
        index
            .upsert_batch(tenant.tenant, collection, batch)
            .unwrap();
    }
}

fn small_index() -> VectorIndex {
    VectorIndex::new(IndexConfig::new(DIM)).unwrap()
}

fn graph_config() -> IndexConfig {
    let mut config = IndexConfig::new(DIM);
    config.exact_max = 1_000;
    config.hnsw.m = 16;
    config.hnsw.ef_construction = 64;
    config.hnsw.ef_search = 128;
    config
}

/// An index whose partitions get a graph past 1 000 vectors.
fn graph_index() -> VectorIndex {
    VectorIndex::new(graph_config()).unwrap()
}

#[test]
fn a_small_partition_returns_exactly_the_brute_force_top_k() {
    let index = small_index();
    let (tenant, queries) = tenant_data(1, 2_000);
    let collection = CollectionId::new();
    load(&index, &tenant, collection);
    for query in &queries {
        for k in [1, 10, 50] {
            let hits = index
                .search(tenant.tenant, &[], &embedding(query), k, -1.0)
                .unwrap();
            let truth = brute_force_top_k(&tenant, query, k);
            let got: Vec<ChunkId> = hits.iter().map(|h| h.chunk).collect();
            let want: Vec<ChunkId> = truth.iter().map(|n| n.chunk).collect();
            assert_eq!(got, want);
            for (hit, truth) in hits.iter().zip(&truth) {
                assert!((hit.score - truth.score).abs() < 1e-5);
                assert_eq!(hit.collection, collection);
            }
        }
    }
}

#[test]
fn hits_are_sorted_by_descending_score() {
    let index = small_index();
    let (tenant, queries) = tenant_data(2, 500);
    load(&index, &tenant, CollectionId::new());
    let hits = index
        .search(tenant.tenant, &[], &embedding(&queries[0]), 40, -1.0)
        .unwrap();
    assert_eq!(hits.len(), 40);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
}

#[test]
fn a_tenant_never_sees_another_tenants_vectors() {
    let index = small_index();
    let (a, queries) = tenant_data(3, 800);
    let (b, _) = tenant_data(4, 800);
    // The same collection id under both tenants must still be two partitions.
    let collection = CollectionId::new();
    load(&index, &a, collection);
    load(&index, &b, collection);
    let a_chunks: HashSet<ChunkId> = a.chunks.iter().copied().collect();
    for query in &queries {
        let hits = index
            .search(b.tenant, &[], &embedding(query), 25, -1.0)
            .unwrap();
        assert_eq!(hits.len(), 25);
        assert!(hits.iter().all(|h| !a_chunks.contains(&h.chunk)));
    }
    let stranger = TenantId::new();
    assert!(
        index
            .search(stranger, &[], &embedding(&queries[0]), 5, -1.0)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_collection_filter_is_honoured_and_empty_means_all() {
    let index = small_index();
    let (tenant, queries) = tenant_data(5, 600);
    let (first, second) = (CollectionId::new(), CollectionId::new());
    let items: Vec<(ChunkId, Embedding)> = (0..tenant.len())
        .map(|i| (tenant.chunks[i], embedding(tenant.vector(i))))
        .collect();
    let (left, right) = items.split_at(300);
    index.upsert_batch(tenant.tenant, first, left).unwrap();
    index.upsert_batch(tenant.tenant, second, right).unwrap();
    let query = embedding(&queries[0]);

    let only_second = index
        .search(tenant.tenant, &[second], &query, 20, -1.0)
        .unwrap();
    assert_eq!(only_second.len(), 20);
    assert!(only_second.iter().all(|h| h.collection == second));
    let right_ids: HashSet<ChunkId> = right.iter().map(|(c, _)| *c).collect();
    assert!(only_second.iter().all(|h| right_ids.contains(&h.chunk)));

    let everything = index.search(tenant.tenant, &[], &query, 20, -1.0).unwrap();
    let truth: Vec<ChunkId> = brute_force_top_k(&tenant, &queries[0], 20)
        .iter()
        .map(|n| n.chunk)
        .collect();
    assert_eq!(
        everything.iter().map(|h| h.chunk).collect::<Vec<_>>(),
        truth
    );

    let both = index
        .search(tenant.tenant, &[first, second, first], &query, 20, -1.0)
        .unwrap();
    assert_eq!(
        both, everything,
        "listing a collection twice must not duplicate hits"
    );
    assert!(
        index
            .search(tenant.tenant, &[CollectionId::new()], &query, 5, -1.0)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_score_threshold_is_honoured() {
    let index = small_index();
    let (tenant, queries) = tenant_data(6, 1_000);
    load(&index, &tenant, CollectionId::new());
    let query = &queries[0];
    let truth = brute_force_top_k(&tenant, query, tenant.len());
    let min_score = truth[30].score;
    let hits = index
        .search(tenant.tenant, &[], &embedding(query), 100, min_score)
        .unwrap();
    assert!(hits.iter().all(|h| h.score >= min_score));
    let expected = truth.iter().filter(|n| n.score >= min_score).count();
    assert!(
        (expected - 1..=expected + 1).contains(&hits.len()),
        "{} vs {expected}",
        hits.len()
    );
}

#[test]
fn an_insert_is_visible_to_the_next_search() {
    let index = graph_index();
    let (tenant, queries) = tenant_data(7, 1_500);
    let collection = CollectionId::new();
    load(&index, &tenant, collection);
    for (i, query) in queries.iter().enumerate().take(10) {
        let newcomer = ChunkId::new();
        index
            .insert(tenant.tenant, collection, newcomer, &embedding(query))
            .unwrap();
        let hits = index
            .search(tenant.tenant, &[], &embedding(query), 1, -1.0)
            .unwrap();
        assert_eq!(hits[0].chunk, newcomer, "query {i}");
        assert!((hits[0].score - 1.0).abs() < 1e-5);
    }
}

#[test]
fn a_second_insert_of_the_same_chunk_is_a_conflict_and_upsert_replaces() {
    let index = small_index();
    let (tenant, collection, chunk) = (TenantId::new(), CollectionId::new(), ChunkId::new());
    let mut v = vec![0.0; DIM];
    v[0] = 1.0;
    index
        .insert(tenant, collection, chunk, &embedding(&v))
        .unwrap();
    assert_eq!(
        index.insert(tenant, collection, chunk, &embedding(&v)),
        Err(IndexError::AlreadyExists(chunk))
    );
    let mut w = vec![0.0; DIM];
    w[1] = 1.0;
    assert_eq!(
        index.upsert(tenant, collection, chunk, &embedding(&w)),
        Ok(true)
    );
    assert_eq!(index.len(), 1);
    let hits = index.search(tenant, &[], &embedding(&w), 1, -1.0).unwrap();
    assert!((hits[0].score - 1.0).abs() < 1e-6);
}

#[test]
fn deleted_chunks_are_never_returned_by_exact_or_graph_partitions() {
    for index in [small_index(), graph_index()] {
        let (tenant, queries) = tenant_data(8, 1_500);
        let collection = CollectionId::new();
        load(&index, &tenant, collection);
        let query = embedding(&queries[0]);
        let first = index.search(tenant.tenant, &[], &query, 10, -1.0).unwrap();
        let doomed: Vec<ChunkId> = first.iter().map(|h| h.chunk).collect();
        assert_eq!(index.delete_many(tenant.tenant, collection, &doomed), 10);
        assert!(
            !index.delete(tenant.tenant, collection, doomed[0]),
            "already gone"
        );
        let after = index.search(tenant.tenant, &[], &query, 10, -1.0).unwrap();
        assert_eq!(after.len(), 10);
        assert!(after.iter().all(|h| !doomed.contains(&h.chunk)));
        assert_eq!(index.tenant_len(tenant.tenant), tenant.len() - 10);
    }
}

#[test]
fn a_graph_partition_with_many_deletes_still_returns_k_live_hits() {
    // Manual maintenance, so the tombstones stay in the graph instead of being compacted.
    let mut config = graph_config();
    config.auto_maintain = false;
    let index = VectorIndex::new(config).unwrap();
    let (tenant, queries) = tenant_data(9, 2_600);
    let collection = CollectionId::new();
    load(&index, &tenant, collection);
    index.maintain();
    assert_eq!(
        index
            .partition_stats(tenant.tenant, collection)
            .unwrap()
            .graph_nodes,
        2_600
    );
    // Delete three of every five: more tombstones than live nodes, still above exact_max.
    let doomed: Vec<ChunkId> = tenant
        .chunks
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 >= 2)
        .map(|(_, c)| *c)
        .collect();
    let survivors: HashSet<ChunkId> = tenant
        .chunks
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 < 2)
        .map(|(_, c)| *c)
        .collect();
    index.delete_many(tenant.tenant, collection, &doomed);
    let stats = index.partition_stats(tenant.tenant, collection).unwrap();
    assert_eq!(
        (stats.graph_nodes, stats.tombstones, stats.live),
        (2_600, 1_560, 1_040)
    );
    for query in &queries {
        let hits = index
            .search(tenant.tenant, &[], &embedding(query), 10, -1.0)
            .unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| survivors.contains(&h.chunk)));
    }
    // Maintenance then compacts them away.
    index.maintain();
    let stats = index.partition_stats(tenant.tenant, collection).unwrap();
    assert_eq!(
        (stats.graph_nodes, stats.tombstones, stats.live),
        (1_040, 0, 1_040)
    );
}

#[test]
fn a_graph_partition_never_returns_fewer_than_k_when_enough_qualify() {
    let index = graph_index();
    let (tenant, queries) = tenant_data(10, 2_000);
    let collection = CollectionId::new();
    load(&index, &tenant, collection);
    let stats = index.partition_stats(tenant.tenant, collection).unwrap();
    assert!(stats.graph_nodes > 0 && stats.unlinked == 0, "{stats:?}");
    for query in &queries {
        for k in [10, 100] {
            let hits = index
                .search(tenant.tenant, &[], &embedding(query), k, -1.0)
                .unwrap();
            assert_eq!(hits.len(), k);
        }
        // A threshold that exactly 40 vectors clear.
        let truth = brute_force_top_k(&tenant, query, 41);
        let min_score = (truth[39].score + truth[40].score) / 2.0;
        let hits = index
            .search(tenant.tenant, &[], &embedding(query), 40, min_score)
            .unwrap();
        assert_eq!(hits.len(), 40);
    }
}

#[test]
fn graph_partition_recall_on_a_seeded_dataset_is_at_least_0_95() {
    let index = graph_index();
    let (tenant, queries) = tenant_data(11, 3_000);
    load(&index, &tenant, CollectionId::new());
    let k = 10;
    let mut found = 0;
    for query in &queries {
        let truth: HashSet<ChunkId> = brute_force_top_k(&tenant, query, k)
            .iter()
            .map(|n| n.chunk)
            .collect();
        let hits = index
            .search(tenant.tenant, &[], &embedding(query), k, -1.0)
            .unwrap();
        found += hits.iter().filter(|h| truth.contains(&h.chunk)).count();
    }
    let recall = found as f64 / (k * queries.len()) as f64;
    assert!(recall >= 0.95, "recall@10 {recall}");
}

#[test]
fn deleting_a_collection_or_tenant_removes_its_vectors() {
    let index = small_index();
    let (tenant, queries) = tenant_data(12, 400);
    let (keep, drop) = (CollectionId::new(), CollectionId::new());
    load(&index, &tenant, keep);
    let extra = ChunkId::new();
    index
        .upsert(tenant.tenant, drop, extra, &embedding(&queries[0]))
        .unwrap();
    assert_eq!(index.delete_collection(tenant.tenant, drop), 1);
    let hits = index
        .search(tenant.tenant, &[], &embedding(&queries[0]), 5, -1.0)
        .unwrap();
    assert!(
        hits.iter()
            .all(|h| h.chunk != extra && h.collection == keep)
    );
    assert_eq!(index.delete_tenant(tenant.tenant), 400);
    assert!(index.is_empty());
}

#[test]
fn the_wrong_dimension_is_rejected_and_nothing_is_written() {
    let index = small_index();
    let (tenant, collection) = (TenantId::new(), CollectionId::new());
    let good = embedding(&[1.0; DIM]);
    let bad = embedding(&[1.0; 3]);
    let batch = vec![
        (ChunkId::new(), good.clone()),
        (ChunkId::new(), bad.clone()),
    ];
    assert_eq!(
        index.upsert_batch(tenant, collection, &batch),
        Err(IndexError::DimensionMismatch {
            expected: DIM,
            actual: 3
        })
    );
    assert!(index.is_empty());
    assert!(matches!(
        index.search(tenant, &[], &bad, 1, -1.0),
        Err(IndexError::DimensionMismatch { .. })
    ));
    assert!(VectorIndex::new(IndexConfig::new(0)).is_err());
}

#[test]
fn a_partition_that_outgrows_exact_search_gets_a_graph_and_loses_it_when_it_shrinks() {
    let index = graph_index();
    let (tenant, queries) = tenant_data(13, 2_000);
    let collection = CollectionId::new();
    load(&index, &tenant, collection);
    let stats = index.partition_stats(tenant.tenant, collection).unwrap();
    assert_eq!(stats.graph_nodes, 2_000);
    index.delete_many(tenant.tenant, collection, &tenant.chunks[..1_500]);
    let stats = index.partition_stats(tenant.tenant, collection).unwrap();
    assert_eq!(
        (stats.graph_nodes, stats.live, stats.tombstones),
        (0, 500, 0)
    );
    let hits = index
        .search(tenant.tenant, &[], &embedding(&queries[0]), 10, -1.0)
        .unwrap();
    let remaining = &tenant.chunks[1_500..];
    assert!(hits.iter().all(|h| remaining.contains(&h.chunk)));
}

#[test]
fn concurrent_searches_and_writes_see_consistent_results() {
    let index = Arc::new(graph_index());
    let (tenant, queries) = tenant_data(14, 1_500);
    let collection = CollectionId::new();
    load(&index, &tenant, collection);
    std::thread::scope(|scope| {
        for t in 0..2 {
            let (index, queries, tenant) = (&index, &queries, &tenant);
            scope.spawn(move || {
                for query in queries.iter().skip(t) {
                    let hits = index
                        .search(tenant.tenant, &[], &embedding(query), 10, -1.0)
                        .unwrap();
                    assert_eq!(hits.len(), 10);
                }
            });
        }
        scope.spawn(|| {
            for (i, query) in queries.iter().enumerate() {
                let chunk = ChunkId::new();
                index
                    .upsert(tenant.tenant, collection, chunk, &embedding(query))
                    .unwrap();
                if i % 2 == 0 {
                    index.delete(tenant.tenant, collection, chunk);
                }
            }
        });
    });
    assert_eq!(
        index.tenant_len(tenant.tenant),
        tenant.len() + queries.len() / 2
    );
}
