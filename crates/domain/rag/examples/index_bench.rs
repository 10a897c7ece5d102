//! The in-process half of issue 3's RAG benchmark: loads the seeded synthetic data set
//! into a `VectorIndex` and prints insert rate, recall@10 (mean, p5; by tenant size),
//! queries short of k, QPS on 1 and 2 threads, p50/p99 latency, memory per vector, and
//! the scan kernels' streaming throughput against plain-Rust baselines.
//!
//! `cargo run --release -p trellis-rag --example index_bench -- [--vectors N]
//! [--tenants N] [--queries N] [--seed N] [--ef a,b,c] [--skip-kernels]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use trellis_rag::index::simd::{self, reference};
use trellis_rag::index::synth::{Dataset, GroundTruth, SynthConfig, ground_truth};
use trellis_rag::index::{ChunkId, Embedding, ExactKernel, IndexConfig, VectorIndex};

const K: usize = 10;
const LARGE: usize = 20_000;

struct Args {
    vectors: usize,
    tenants: usize,
    queries: usize,
    seed: u64,
    ef: Vec<usize>,
    kernels: bool,
    baselines: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        vectors: 200_000,
        tenants: 1_000,
        queries: 2_000,
        seed: 42,
        ef: vec![],
        kernels: true,
        baselines: true,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < raw.len() {
        let value = raw.get(i + 1).cloned().unwrap_or_default();
        match raw[i].as_str() {
            "--vectors" => args.vectors = value.parse().unwrap_or(args.vectors),
            "--tenants" => args.tenants = value.parse().unwrap_or(args.tenants),
            "--queries" => args.queries = value.parse().unwrap_or(args.queries),
            "--seed" => args.seed = value.parse().unwrap_or(args.seed),
            "--ef" => args.ef = value.split(',').filter_map(|s| s.parse().ok()).collect(),
            "--skip-kernels" => {
                args.kernels = false;
                i += 1;
                continue;
            }
            "--skip-baselines" => {
                args.baselines = false;
                i += 1;
                continue;
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    args
}

fn main() {
    let args = parse_args();
    println!("# RAG in-process index benchmark");
    println!(
        "machine: {} threads available; build: release",
        std::thread::available_parallelism().map_or(1, usize::from)
    );

    let started = Instant::now();
    let mut config = SynthConfig::new(args.seed, args.vectors, args.tenants);
    config.queries = args.queries;
    let data = config.generate();
    let generated = started.elapsed();
    let started = Instant::now();
    let truth = ground_truth(&data, K);
    let truth_time = started.elapsed();
    let large_tenants = data.tenants.iter().filter(|t| t.len() > LARGE).count();
    let off_topic = data.queries.iter().filter(|q| q.off_topic).count();
    println!(
        "data: {} vectors × {} dims, {} tenants (largest {}, {} above {LARGE}), {} queries ({} off-topic), seed {}",
        data.total_vectors(),
        data.dimension,
        data.tenants.len(),
        data.tenants.first().map_or(0, |t| t.len()),
        large_tenants,
        data.queries.len(),
        off_topic,
        args.seed
    );
    println!(
        "generated in {:.1?}, ground truth (exact f64 scan) in {:.1?}",
        generated, truth_time
    );

    if args.kernels {
        kernels(data.dimension);
    }

    let queries: Vec<Embedding> = data
        .queries
        .iter()
        .filter_map(|q| Embedding::new(q.vector.clone()).ok())
        .collect();

    let rss_before = rss_bytes();
    let (index, times) = load(&data, IndexConfig::new(data.dimension));
    let rss_after = rss_bytes();
    let stats = index.stats();
    println!("\n## Load (default config, auto maintenance)");
    println!(
        "inserted {} vectors in {:.2?}: {:.0} vectors/s overall; {} partitions, {} with an HNSW graph",
        stats.vectors,
        times.total,
        stats.vectors as f64 / times.total.as_secs_f64(),
        stats.partitions,
        stats.graph_partitions
    );
    println!(
        "  exact-only partitions: {:.0} vectors/s; graph partitions (incl. HNSW build): {:.0} vectors/s",
        times.small_vectors as f64 / times.small.as_secs_f64().max(1e-9),
        times.large_vectors as f64 / times.large.as_secs_f64().max(1e-9),
    );
    let dim_bytes = data.dimension * 4;
    println!(
        "memory: {:.0} bytes/vector estimated by the index ({} bytes of f32 components); RSS grew {:.0} bytes/vector",
        stats.memory_bytes as f64 / stats.vectors as f64,
        dim_bytes,
        rss_after.saturating_sub(rss_before) as f64 / stats.vectors as f64
    );

    println!("\n## Search, k = {K}, no threshold");
    println!("load average before searching: {}", load_average());
    report(
        &format!(
            "default: exact (int8 pre-scan + f32 re-rank) ≤ {}, HNSW above",
            index.config().exact_max
        ),
        &index,
        &data,
        &truth,
        &queries,
    );
    drop(index);

    if args.baselines {
        // The split: exact up to 20 000, a graph above, so the largest tenant
        // goes through HNSW.
        let mut split = IndexConfig::new(data.dimension);
        split.exact_max = LARGE;
        let (index, times) = load(&data, split);
        println!(
            "\n## Same data, exact ≤ {LARGE} and HNSW (m {}, ef_construction {}) above",
            split.hnsw.m, split.hnsw.ef_construction
        );
        println!(
            "graph tenants loaded at {:.0} vectors/s including the graph build; {} partition(s) with a graph",
            times.large_vectors as f64 / times.large.as_secs_f64().max(1e-9),
            index.stats().graph_partitions
        );
        let ef_values = if args.ef.is_empty() {
            vec![128, 256]
        } else {
            args.ef.clone()
        };
        for ef in ef_values {
            index.set_ef_search(ef);
            report(
                &format!("exact ≤ {LARGE}, HNSW ef_search {ef} above"),
                &index,
                &data,
                &truth,
                &queries,
            );
        }
        drop(index);

        println!("\n## Baseline in the same run: every partition scanned exactly in f32");
        let mut exact_f32 = IndexConfig::new(data.dimension);
        exact_f32.exact_max = usize::MAX;
        exact_f32.exact_kernel = ExactKernel::Float;
        let (index, _) = load(&data, exact_f32);
        report(
            "exact only, f32 scan (no int8 pre-scan)",
            &index,
            &data,
            &truth,
            &queries,
        );
    }
    println!("\nload average at the end: {}", load_average());
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

struct LoadTimes {
    total: Duration,
    small: Duration,
    small_vectors: usize,
    large: Duration,
    large_vectors: usize,
}

/// Inserts every tenant in batches of 500 (a large document's chunks), timing small and
/// large tenants apart: the large ones pay for their graph.
fn load(data: &Dataset, config: IndexConfig) -> (VectorIndex, LoadTimes) {
    let index = match VectorIndex::new(config) {
        Ok(index) => index,
        Err(e) => {
            eprintln!("bad config: {e}");
            std::process::exit(1);
        }
    };
    let mut times = LoadTimes {
        total: Duration::ZERO,
        small: Duration::ZERO,
        small_vectors: 0,
        large: Duration::ZERO,
        large_vectors: 0,
    };
    for tenant in &data.tenants {
        let items: Vec<(usize, ChunkId, Embedding)> = (0..tenant.len())
            .filter_map(|i| {
                Embedding::new(tenant.vector(i).to_vec())
                    .ok()
                    .map(|e| (i, tenant.chunks[i], e))
            })
            .collect();
        let started = Instant::now();
        for collection in &tenant.collections {
            let mine: Vec<(ChunkId, Embedding)> = items
                .iter()
                .filter(|(i, _, _)| tenant.collection(*i) == *collection)
                .map(|(_, c, e)| (*c, e.clone()))
                .collect();
            for batch in mine.chunks(500) {
                if let Err(e) = index.upsert_batch(tenant.tenant, *collection, batch) {
                    eprintln!("insert failed: {e}");
                    std::process::exit(1);
                }
            }
        }
        let took = started.elapsed();
        times.total += took;
        if tenant.len() > LARGE {
            times.large += took;
            times.large_vectors += tenant.len();
        } else {
            times.small += took;
            times.small_vectors += tenant.len();
        }
    }
    (index, times)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Runs every query once on one thread (recall, latency), then on 1 and 2 threads for
/// throughput, and prints one block.
fn report(
    label: &str,
    index: &VectorIndex,
    data: &Dataset,
    truth: &GroundTruth,
    queries: &[Embedding],
) {
    // Warm-up pass, so the first queries don't pay for page faults and cold caches.
    run_queries(index, data, queries, 0..queries.len());
    let passes = 3;
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(passes); queries.len()];
    let mut recall_of = vec![0.0; queries.len()];
    let mut short = 0;
    for pass in 0..passes {
        for (qi, (query, q)) in queries.iter().zip(&data.queries).enumerate() {
            let tenant = &data.tenants[q.tenant];
            let started = Instant::now();
            let hits = index
                .search(tenant.tenant, &[], query, K, -1.0)
                .unwrap_or_default();
            samples[qi].push(started.elapsed().as_secs_f64() * 1e6);
            if pass == 0 {
                if hits.len() < K.min(tenant.len()) {
                    short += 1;
                }
                let returned: Vec<ChunkId> = hits.iter().map(|h| h.chunk).collect();
                recall_of[qi] = truth.recall(qi, &returned);
            }
        }
    }
    println!("\n### {label}");
    println!(
        "| queries | n | recall@10 mean | p5 | min | p50 µs | p99 µs | p99 µs, all samples | max µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (class, name) in [
        ("all", "all"),
        ("small", "tenants ≤ 20k"),
        ("large", "tenants > 20k"),
        ("on-topic", "on-topic"),
        ("off-topic", "off-topic"),
    ] {
        let members: Vec<usize> = (0..queries.len())
            .filter(|&qi| {
                let q = &data.queries[qi];
                match class {
                    "small" => data.tenants[q.tenant].len() <= LARGE,
                    "large" => data.tenants[q.tenant].len() > LARGE,
                    "on-topic" => !q.off_topic,
                    "off-topic" => q.off_topic,
                    _ => true,
                }
            })
            .collect();
        if members.is_empty() {
            continue;
        }
        let n = members.len();
        let recalls = sorted(members.iter().map(|&qi| recall_of[qi]).collect());
        let mean = recalls.iter().sum::<f64>() / n as f64;
        // Per query, the best of the passes: other engineers' builds share these two
        // cores, and a query preempted for a time slice measures the scheduler, not us.
        let best = sorted(
            members
                .iter()
                .map(|&qi| samples[qi].iter().copied().fold(f64::INFINITY, f64::min))
                .collect(),
        );
        let all = sorted(
            members
                .iter()
                .flat_map(|&qi| samples[qi].iter().copied())
                .collect(),
        );
        println!(
            "| {name} | {n} | {mean:.4} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} |",
            percentile(&recalls, 5.0),
            recalls.first().copied().unwrap_or(f64::NAN),
            percentile(&best, 50.0),
            percentile(&best, 99.0),
            percentile(&all, 99.0),
            all.last().copied().unwrap_or(f64::NAN),
        );
    }
    println!("queries returning fewer than k: {short}");
    let qps1 = throughput(index, data, queries, 1);
    let qps2 = throughput(index, data, queries, 2);
    println!(
        "QPS: {qps1:.0} on 1 thread, {qps2:.0} on 2 threads ({:.2}×); load average {}",
        qps2 / qps1,
        load_average()
    );
}

fn run_queries(
    index: &VectorIndex,
    data: &Dataset,
    queries: &[Embedding],
    range: std::ops::Range<usize>,
) -> usize {
    let mut n = 0;
    for qi in range {
        let tenant = data.tenants[data.queries[qi].tenant].tenant;
        n += black_box(
            index
                .search(tenant, &[], &queries[qi], K, -1.0)
                .map(|h| h.len())
                .unwrap_or(0),
        );
    }
    n
}

/// Queries per second with `threads` threads each running the whole query list (twice
/// for one thread, so both measurements do the same total work per thread count).
fn throughput(index: &VectorIndex, data: &Dataset, queries: &[Embedding], threads: usize) -> f64 {
    let rounds = 2;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                for round in 0..rounds {
                    // Each thread starts at a different offset so they don't walk in step.
                    let offset =
                        (t * queries.len() / threads.max(1) + round) % queries.len().max(1);
                    run_queries(index, data, queries, offset..queries.len());
                    run_queries(index, data, queries, 0..offset);
                }
            });
        }
    });
    (threads * rounds * queries.len()) as f64 / started.elapsed().as_secs_f64()
}

fn rss_bytes() -> usize {
    // Linux only: resident pages × page size (4 KiB here); 0 elsewhere.
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Kernel throughput over data much larger than the last-level cache (streaming), and
/// over a block that fits in L2 (compute bound), against plain-Rust baselines.
fn kernels(dim: usize) {
    println!("\n## Scan kernels, {dim}-d, one thread");
    let stream_rows = 400_000; // 614 MB of f32, several times the 105 MB L3
    let cache_rows = 1_000; // 1.5 MB of f32, fits in the 2 MB of L2
    let mut state = 1u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let query: Vec<f32> = (0..dim).map(|_| next()).collect();
    let data: Vec<f32> = (0..stream_rows * dim).map(|_| next()).collect();
    let codes: Vec<i8> = (0..stream_rows * 4 * simd::padded_dim(dim))
        .map(|_| (next() * 254.0) as i8)
        .collect();
    let q16: Vec<i16> = (0..simd::padded_dim(dim))
        .map(|_| (next() * 60_000.0) as i16)
        .collect();
    println!("| kernel | data | GB/s | M vectors/s | vs naive |");
    println!("|---|---|---:|---:|---:|");
    for (label, rows, reps) in [("streaming", stream_rows, 3), ("in L2", cache_rows, 400)] {
        let slice = &data[..rows * dim];
        let mut out = vec![0.0f32; rows];
        let bytes = (rows * dim * 4) as f64;
        let naive = time(reps, || {
            reference::scan_with(reference::dot_naive, &query, slice, &mut out)
        });
        let chunked = time(reps, || {
            reference::scan_with(reference::dot_chunked, &query, slice, &mut out)
        });
        let pulp = time(reps, || simd::scan_f32(&query, slice, &mut out));
        for (name, secs) in [
            ("f32 naive loop", naive),
            ("f32 chunks_exact ×16 (auto-vectorised)", chunked),
            ("f32 pulp (runtime AVX-512/AVX2)", pulp),
        ] {
            println!(
                "| {name} | {label} | {:.1} | {:.1} | {:.1}× |",
                bytes / secs / 1e9,
                rows as f64 / secs / 1e6,
                naive / secs
            );
        }
        let rows8 = if rows == stream_rows { rows * 4 } else { rows };
        let p = simd::padded_dim(dim);
        let mut out8 = vec![0i32; rows8];
        let code_slice = &codes[..rows8 * p];
        let int8 = time(reps, || simd::scan_i8(&q16, code_slice, &mut out8));
        println!(
            "| int8 × i16 pulp (runtime AVX-512/AVX2) | {label} | {:.1} | {:.1} | {:.1}× (per vector) |",
            (rows8 * p) as f64 / int8 / 1e9,
            rows8 as f64 / int8 / 1e6,
            (naive / rows as f64) / (int8 / rows8 as f64)
        );
    }
}

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let started = Instant::now();
    for _ in 0..reps {
        f();
    }
    started.elapsed().as_secs_f64() / reps as f64
}
