//! Criterion micro-benchmarks of the vector index: the dot-product kernels against
//! plain-Rust loops, one exact search of a 20 000-vector partition (int8 pre-scan vs. f32
//! scan), and one HNSW search of a 30 000-vector partition. The whole-system figures
//! (recall, p99, QPS) come from `examples/index_bench.rs`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use trellis_kernel::TenantId;
use trellis_rag::index::simd::{self, reference};
use trellis_rag::index::synth::SynthConfig;
use trellis_rag::index::{ChunkId, CollectionId, Embedding, ExactKernel, IndexConfig, VectorIndex};

fn kernels(c: &mut Criterion) {
    let dim = 384;
    let a: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.11).cos()).collect();
    let mut group = c.benchmark_group("dot_384");
    group.bench_function("naive", |bench| {
        bench.iter(|| reference::dot_naive(black_box(&a), black_box(&b)))
    });
    group.bench_function("chunks_exact_x16", |bench| {
        bench.iter(|| reference::dot_chunked(black_box(&a), black_box(&b)))
    });
    group.bench_function("pulp", |bench| {
        bench.iter(|| simd::dot(black_box(&a), black_box(&b)))
    });
    group.finish();

    let rows = 1_000;
    let data: Vec<f32> = (0..rows * dim).map(|i| (i as f32 * 0.013).sin()).collect();
    let codes: Vec<i8> = (0..rows * dim).map(|i| ((i * 37) % 255) as i8).collect();
    let q16: Vec<i16> = (0..dim).map(|i| ((i * 7919) % 60_000) as i16).collect();
    let mut out = vec![0.0; rows];
    let mut out8 = vec![0; rows];
    let mut group = c.benchmark_group("scan_1000x384");
    group.bench_function("f32_pulp", |bench| {
        bench.iter(|| simd::scan_f32(black_box(&a), black_box(&data), &mut out))
    });
    group.bench_function("int8_pulp", |bench| {
        bench.iter(|| simd::scan_i8(black_box(&q16), black_box(&codes), &mut out8))
    });
    group.finish();
}

fn index_of(vectors: usize, config: IndexConfig) -> (VectorIndex, TenantId, Vec<Embedding>) {
    let mut synth = SynthConfig::new(7, vectors, 1);
    synth.queries = 64;
    let data = synth.generate();
    let tenant = &data.tenants[0];
    let index = VectorIndex::new(config).unwrap_or_else(|e| panic!("{e}"));
    let collection = CollectionId::new();
    let items: Vec<(ChunkId, Embedding)> = (0..tenant.len())
        .filter_map(|i| {
            Embedding::new(tenant.vector(i).to_vec())
                .ok()
                .map(|e| (tenant.chunks[i], e))
        })
        .collect();
    for batch in items.chunks(1_000) {
        index
            .upsert_batch(tenant.tenant, collection, batch)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let queries = data
        .queries
        .iter()
        .filter_map(|q| Embedding::new(q.vector.clone()).ok())
        .collect();
    (index, tenant.tenant, queries)
}

fn searches(c: &mut Criterion) {
    let mut group = c.benchmark_group("search_k10");
    group.sample_size(30);
    for (name, kernel) in [
        ("exact_20k_int8_rerank", ExactKernel::QuantizedRerank),
        ("exact_20k_f32", ExactKernel::Float),
    ] {
        let mut config = IndexConfig::new(384);
        config.exact_kernel = kernel;
        let (index, tenant, queries) = index_of(20_000, config);
        let mut i = 0;
        group.bench_function(name, |bench| {
            bench.iter(|| {
                i = (i + 1) % queries.len();
                index.search(tenant, &[], &queries[i], 10, -1.0)
            })
        });
    }
    // Below the default `exact_max` a 30 000-vector partition would be scanned exactly.
    let mut graph = IndexConfig::new(384);
    graph.exact_max = 20_000;
    let (index, tenant, queries) = index_of(30_000, graph);
    let mut i = 0;
    group.bench_function("hnsw_30k", |bench| {
        bench.iter(|| {
            i = (i + 1) % queries.len();
            index.search(tenant, &[], &queries[i], 10, -1.0)
        })
    });
    group.finish();
}

criterion_group!(benches, kernels, searches);
criterion_main!(benches);
