//! The measuring half of `cargo xtask bench rag` (issue 3): one run over the seeded
//! synthetic data set (`trellis_rag::index::synth`) that measures the in-process index and
//! Postgres side by side, on the same vectors, queries and ground truth, and writes every
//! figure as JSON for xtask to print and keep (`target/bench/rag.json`).
//!
//! - **In-process**: `trellis_rag::index::VectorIndex` with its default configuration;
//!   insert rate, resident memory per vector, and the scan kernels' streaming throughput.
//! - **Postgres**, loaded through the adapter (`TenantRepo`, `CollectionRepo`,
//!   `DocumentRepo`, `ChunkRepo::replace_for_document`, i.e. multi-row `INSERT`s of 500):
//!   the bulk of the data goes in with the HNSW index dropped, the index is then rebuilt
//!   from its own definition, and one tenant is inserted afterwards into the indexed table
//!   (the steady-state ingestion rate). Table and index bytes per vector.
//! - Three ways of searching Postgres, all in tenant-scoped transactions as the app role:
//!   the **baseline** (`WHERE tenant_id = $1 ORDER BY embedding <=> $2 LIMIT 10` with
//!   pgvector's defaults: `ef_search` 40, no iterative scan; the planner free to choose),
//!   the same with **HNSW forced** (`enable_sort = off`, which leaves the HNSW index as the
//!   only ordered path), and **our method**, the adapter's `VectorIndex::search`, twice:
//!   as the app runs it, and on connections with `plan_cache_mode = force_custom_plan`.
//!
//! Why the last one: sqlx prepares every statement, and after five executions on a
//! connection Postgres may switch a prepared statement to a *generic plan*, costed for an
//! average tenant (a few hundred rows), which for the vector queries is the tenant's
//! B-tree plus a sort, i.e. an exact scan, whatever the tenant's size. The baselines set
//! `force_custom_plan` themselves, so they are planned for their parameters every time,
//! like a client sending literal SQL.
//!
//! For each way of searching: recall@10 (mean, p5, min; tenants ≤ 20 000 and above),
//! queries short of k, latency p50/p99 on one thread/connection, QPS on 1 and 2.
//!
//! It needs an empty, migrated-or-migratable database: `DATABASE_URL` (the app role) and
//! `TRELLIS_MIGRATION_DATABASE_URL` (the owner, which may drop and rebuild the index and
//! run `VACUUM`). `cargo xtask bench rag` creates a scratch database for it; run by hand:
//!
//! ```text
//! cargo run --release -p trellis-postgres --example rag_bench -- --out rag_runner.json \
//!     [--vectors 200000] [--tenants 1000] [--queries 2000] [--seed 42] \
//!     [--load-connections 2] [--min-seconds 5] [--adopt largest=UUID] [--adopt median=UUID] \
//!     [--skip-kernel]
//! ```
//!
//! `--adopt` maps a synthetic tenant onto a tenant that already exists (created through
//! the HTTP API by xtask, with an admin who can log in), so that the HTTP load of the same
//! run searches the same data; only the tenant id changes, not a vector.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sea_orm::prelude::PgVector;
use sea_orm::{
    ConnectOptions, ConnectionTrait as _, Database, DatabaseConnection, DbBackend, Statement,
    TransactionTrait as _,
};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use trellis_kernel::{Email, PasswordHash, PlatformCtx, Slug, TenantCtx, TenantId, UserId};
use trellis_postgres::{DEFAULT_MAX_VECTORS, PgStore, PgVectorCache};
use trellis_rag::index::synth::{Dataset, GroundTruth, SynthConfig, ground_truth};
use trellis_rag::index::{ChunkId, Embedding, IndexConfig, simd};
use trellis_rag::{
    Chunk, ChunkingSettings, DocumentId, EmbeddedChunk, EmbeddingModel, NewCollection, NewDocument,
    SearchFilter, SourceType, Span,
};
use trellis_tenancy::{Branding, FirstAdmin, NewTenant, Plan, TenantConfig};

/// Results per query.
const K: usize = 10;
/// Issue 3 splits its recall targets here: exact answers up to this tenant size.
const LARGE: usize = 20_000;
/// Chunks per synthetic document: one `replace_for_document` call, a large document.
const DOC_CHUNKS: usize = 500;

// ----- arguments -------------------------------------------------------------------------

/// Which synthetic tenant `--adopt` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// The largest tenant (the only one above 20 000 vectors in issue 3's data).
    Largest,
    /// The tenant the median query goes to (queries follow tenant size).
    Median,
    /// Tenant number n, largest first.
    Index(usize),
}

#[derive(Debug, Clone, PartialEq)]
struct Args {
    vectors: usize,
    tenants: usize,
    queries: usize,
    seed: u64,
    load_connections: usize,
    /// Every QPS measurement runs whole passes over the queries for at least this long.
    min_seconds: f64,
    /// Inserted after the HNSW index is built, to measure ingestion into the indexed table.
    live_tenant: usize,
    adopt: Vec<(Pick, uuid::Uuid)>,
    kernel: bool,
    out: Option<PathBuf>,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            vectors: 200_000,
            tenants: 1_000,
            queries: 2_000,
            seed: 42,
            load_connections: 2,
            min_seconds: 5.0,
            live_tenant: 1,
            adopt: Vec::new(),
            kernel: true,
            out: None,
        }
    }
}

fn parse_pick(text: &str) -> Result<(Pick, uuid::Uuid)> {
    let (which, id) = text
        .split_once('=')
        .with_context(|| format!("--adopt wants WHICH=UUID, got {text:?}"))?;
    let pick = match which {
        "largest" => Pick::Largest,
        "median" => Pick::Median,
        n => Pick::Index(
            n.parse()
                .with_context(|| format!("--adopt: {n:?} is not largest, median or a number"))?,
        ),
    };
    let id = uuid::Uuid::parse_str(id).with_context(|| format!("--adopt: bad UUID {id:?}"))?;
    Ok((pick, id))
}

fn parse_args(raw: impl IntoIterator<Item = String>) -> Result<Args> {
    let mut args = Args::default();
    let mut it = raw.into_iter();
    while let Some(flag) = it.next() {
        if flag == "--skip-kernel" {
            args.kernel = false;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let number = || -> Result<usize> {
            value
                .parse()
                .with_context(|| format!("{flag}: {value:?} is not a number"))
        };
        match flag.as_str() {
            "--vectors" => args.vectors = number()?,
            "--tenants" => args.tenants = number()?,
            "--queries" => args.queries = number()?,
            "--seed" => args.seed = number()? as u64,
            "--load-connections" => args.load_connections = number()?,
            "--live-tenant" => args.live_tenant = number()?,
            "--min-seconds" => {
                args.min_seconds = value
                    .parse()
                    .with_context(|| format!("--min-seconds: {value:?} is not a number"))?;
            }
            "--adopt" => args.adopt.push(parse_pick(&value)?),
            "--out" => args.out = Some(PathBuf::from(value)),
            other => bail!("unknown argument {other}"),
        }
    }
    if args.vectors == 0 || args.tenants == 0 || args.queries == 0 || args.load_connections == 0 {
        bail!("--vectors, --tenants, --queries and --load-connections must be at least 1");
    }
    Ok(args)
}

fn env(name: &str) -> Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => bail!("{name} is not set (cargo xtask bench rag sets it to a scratch database)"),
    }
}

// ----- small arithmetic ------------------------------------------------------------------

/// The `p`-th percentile of sorted values (nearest rank), NaN for none.
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

/// The tenant the median query goes to: queries are spread over tenants in proportion
/// to their sizes, so it is where the running total of sizes first reaches half.
fn traffic_median(sizes: &[usize]) -> usize {
    let total: usize = sizes.iter().sum();
    let mut running = 0;
    for (i, size) in sizes.iter().enumerate() {
        running += size;
        if 2 * running >= total {
            return i;
        }
    }
    0
}

/// Resident set size of this process (Linux; 0 elsewhere).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

macro_rules! progress {
    ($($arg:tt)*) => {
        eprintln!("rag_bench: {}", format_args!($($arg)*))
    };
}

// ----- what a way of searching measured --------------------------------------------------

/// Recall, completeness and speed of one way of searching.
#[derive(Debug, Default)]
struct Outcome {
    /// Per query.
    recall: Vec<f64>,
    short_of_k: usize,
    /// `(query, microseconds)` of the single-thread passes.
    latencies: Vec<(usize, f64)>,
    qps_1: f64,
    qps_2: f64,
}

/// Which queries a row of the report covers.
#[derive(Debug, Clone, Copy)]
enum Class {
    All,
    Small,
    Large,
    /// Queries to tenants above 20 000, drawn from the tenant's topics or not.
    LargeOnTopic,
    LargeOffTopic,
}

impl Class {
    const REPORTED: [Class; 5] = [
        Class::All,
        Class::Small,
        Class::Large,
        Class::LargeOnTopic,
        Class::LargeOffTopic,
    ];

    fn name(self) -> &'static str {
        match self {
            Class::All => "all",
            Class::Small => "tenants_le_20k",
            Class::Large => "tenants_gt_20k",
            Class::LargeOnTopic => "tenants_gt_20k_on_topic",
            Class::LargeOffTopic => "tenants_gt_20k_off_topic",
        }
    }

    fn holds(self, data: &Dataset, query: usize) -> bool {
        let q = &data.queries[query];
        let large = data.tenants[q.tenant].len() > LARGE;
        match self {
            Class::All => true,
            Class::Small => !large,
            Class::Large => large,
            Class::LargeOnTopic => large && !q.off_topic,
            Class::LargeOffTopic => large && q.off_topic,
        }
    }
}

impl Outcome {
    fn json(&self, label: &str, data: &Dataset) -> Value {
        let mut classes = serde_json::Map::new();
        for class in Class::REPORTED {
            let recalls = sorted(
                (0..self.recall.len())
                    .filter(|&q| class.holds(data, q))
                    .map(|q| self.recall[q])
                    .collect(),
            );
            if recalls.is_empty() {
                continue;
            }
            let latencies = sorted(
                self.latencies
                    .iter()
                    .filter(|(q, _)| class.holds(data, *q))
                    .map(|(_, us)| *us)
                    .collect(),
            );
            classes.insert(
                class.name().to_owned(),
                json!({
                    "queries": recalls.len(),
                    "recall_mean": recalls.iter().sum::<f64>() / recalls.len() as f64,
                    "recall_p5": percentile(&recalls, 5.0),
                    "recall_min": recalls.first().copied().unwrap_or(f64::NAN),
                    "p50_us": percentile(&latencies, 50.0),
                    "p99_us": percentile(&latencies, 99.0),
                }),
            );
        }
        json!({
            "label": label,
            "classes": classes,
            "short_of_k": self.short_of_k,
            "latency_samples": self.latencies.len(),
            "qps_1": self.qps_1,
            "qps_2": self.qps_2,
        })
    }
}

fn is_short(data: &Dataset, query: usize, hits: usize) -> bool {
    hits < K.min(data.tenants[data.queries[query].tenant].len())
}

// ----- in-process ------------------------------------------------------------------------

type MemIndex = trellis_rag::index::VectorIndex;

fn embeddings(data: &Dataset) -> Result<Vec<Embedding>> {
    data.queries
        .iter()
        .map(|q| Embedding::new(q.vector.clone()).context("a synthetic query is not a unit vector"))
        .collect()
}

/// Loads every tenant in batches of 500 (as a document's chunks would come).
fn load_in_process(data: &Dataset) -> Result<(MemIndex, f64)> {
    let index = MemIndex::new(IndexConfig::new(data.dimension))?;
    let mut seconds = 0.0;
    for tenant in &data.tenants {
        for (c, collection) in tenant.collections.iter().enumerate() {
            let items: Vec<(ChunkId, Embedding)> = (0..tenant.len())
                .filter(|&i| tenant.collection_of[i] == c)
                .map(|i| Ok((tenant.chunks[i], Embedding::new(tenant.vector(i).to_vec())?)))
                .collect::<Result<_>>()?;
            let started = Instant::now();
            for batch in items.chunks(DOC_CHUNKS) {
                index.upsert_batch(tenant.tenant, *collection, batch)?;
            }
            seconds += started.elapsed().as_secs_f64();
        }
    }
    Ok((index, seconds))
}

fn mem_search(index: &MemIndex, data: &Dataset, queries: &[Embedding], q: usize) -> usize {
    let tenant = data.tenants[data.queries[q].tenant].tenant;
    index
        .search(tenant, &[], &queries[q], K, -1.0)
        .map_or(0, |h| h.len())
}

/// Whole passes over the queries from `offset`, until `min_seconds` have passed; returns
/// (queries run, seconds).
fn mem_passes(
    index: &MemIndex,
    data: &Dataset,
    queries: &[Embedding],
    offset: usize,
    min_seconds: f64,
    mut record: Option<&mut Vec<(usize, f64)>>,
) -> (usize, f64) {
    let n = queries.len();
    let started = Instant::now();
    let mut done = 0;
    loop {
        for i in 0..n {
            let q = (offset + i) % n;
            let t = Instant::now();
            black_box(mem_search(index, data, queries, q));
            if let Some(samples) = record.as_deref_mut() {
                samples.push((q, t.elapsed().as_secs_f64() * 1e6));
            }
        }
        done += n;
        let secs = started.elapsed().as_secs_f64();
        if secs >= min_seconds {
            return (done, secs);
        }
    }
}

fn measure_in_process(
    index: &MemIndex,
    data: &Dataset,
    truth: &GroundTruth,
    queries: &[Embedding],
    min_seconds: f64,
) -> Outcome {
    let mut outcome = Outcome::default();
    for (q, query) in queries.iter().enumerate() {
        let tenant = data.tenants[data.queries[q].tenant].tenant;
        let hits = index
            .search(tenant, &[], query, K, -1.0)
            .unwrap_or_default();
        if is_short(data, q, hits.len()) {
            outcome.short_of_k += 1;
        }
        let returned: Vec<ChunkId> = hits.iter().map(|h| h.chunk).collect();
        outcome.recall.push(truth.recall(q, &returned));
    }
    let mut samples = Vec::new();
    let (n, secs) = mem_passes(index, data, queries, 0, min_seconds, Some(&mut samples));
    outcome.latencies = samples;
    outcome.qps_1 = n as f64 / secs;
    let started = Instant::now();
    let done: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                scope.spawn(move || {
                    mem_passes(
                        index,
                        data,
                        queries,
                        t * queries.len() / 2,
                        min_seconds,
                        None,
                    )
                    .0
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .sum()
    });
    outcome.qps_2 = done as f64 / started.elapsed().as_secs_f64();
    outcome
}

/// Streaming throughput of the f32 and int8 scan kernels over data far larger than the
/// last-level cache, one thread.
fn kernels(dim: usize, rows: usize) -> Value {
    let mut state = 1u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let query: Vec<f32> = (0..dim).map(|_| next()).collect();
    let data: Vec<f32> = (0..rows * dim).map(|_| next()).collect();
    let mut out = vec![0.0f32; rows];
    let f32_secs = best_time(3, || simd::scan_f32(&query, &data, &mut out));
    drop(data);
    let p = simd::padded_dim(dim);
    let rows8 = rows * 4;
    let codes: Vec<i8> = (0..rows8 * p).map(|_| (next() * 254.0) as i8).collect();
    let q16: Vec<i16> = (0..p).map(|_| (next() * 60_000.0) as i16).collect();
    let mut out8 = vec![0i32; rows8];
    let i8_secs = best_time(3, || simd::scan_i8(&q16, &codes, &mut out8));
    let f32_bytes = (rows * dim * 4) as f64;
    json!({
        "rows_f32": rows,
        "f32_streaming_gb_s": f32_bytes / f32_secs / 1e9,
        "f32_m_vectors_s": rows as f64 / f32_secs / 1e6,
        "int8_streaming_gb_s": (rows8 * p) as f64 / i8_secs / 1e9,
        "int8_m_vectors_s": rows8 as f64 / i8_secs / 1e6,
        "int8_f32_equivalent_gb_s": rows8 as f64 * (dim * 4) as f64 / i8_secs / 1e9,
    })
}

fn best_time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

// ----- Postgres: loading -----------------------------------------------------------------

/// One synthetic document: rows `rows` of collection `collection` of tenant `tenant`.
#[derive(Debug, Clone)]
struct DocJob {
    tenant: usize,
    collection: usize,
    rows: Vec<usize>,
}

fn doc_jobs(data: &Dataset, tenants: impl Iterator<Item = usize>) -> Vec<DocJob> {
    let mut jobs = Vec::new();
    for t in tenants {
        let tenant = &data.tenants[t];
        for c in 0..tenant.collections.len() {
            let rows: Vec<usize> = (0..tenant.len())
                .filter(|&i| tenant.collection_of[i] == c)
                .collect();
            for part in rows.chunks(DOC_CHUNKS) {
                jobs.push(DocJob {
                    tenant: t,
                    collection: c,
                    rows: part.to_vec(),
                });
            }
        }
    }
    jobs
}

fn model_for(dimension: usize) -> Result<EmbeddingModel> {
    // The hash embedder is always configured in `trellis serve` under this id, so the
    // HTTP search of the same run can embed its query text for these collections.
    let dim = u32::try_from(dimension)?;
    Ok(EmbeddingModel::new(&format!("hash/{dim}"), dim)?)
}

async fn create_tenant(
    store: &PgStore,
    data: &Dataset,
    t: usize,
    adopted: bool,
    seed: u64,
) -> Result<()> {
    let tenant = &data.tenants[t];
    if !adopted {
        let slug = Slug::parse(&format!("synth-{seed}-{t}"))?;
        let new = NewTenant {
            id: tenant.tenant,
            name: format!("Synthetic tenant {t}"),
            slug: slug.clone(),
            subdomain: slug,
            custom_domain: None,
            branding: Branding::default(),
            config: TenantConfig::default(),
            plan: Plan::Free,
        };
        let admin = FirstAdmin {
            id: UserId::new(),
            email: Email::parse(&format!("admin@synth-{t}.bench.example.com"))?,
            name: "Synthetic admin".into(),
            // Not a valid hash: nobody logs in to these tenants.
            password_hash: PasswordHash::from_phc("$argon2id$bench-no-login"),
        };
        trellis_tenancy::TenantRepo::create(store, &PlatformCtx::system(), new, admin)
            .await
            .with_context(|| format!("creating synthetic tenant {t}"))?;
    }
    let ctx = TenantCtx::system(tenant.tenant);
    for (c, id) in tenant.collections.iter().enumerate() {
        trellis_rag::CollectionRepo::insert(
            store,
            &ctx,
            NewCollection {
                id: *id,
                name: format!("synthetic {c}"),
                description: None,
                agent_id: None,
                source_type: SourceType::Upload,
                chunking: ChunkingSettings::default(),
                embedding_model: model_for(data.dimension)?,
                created_by: None,
            },
        )
        .await
        .with_context(|| format!("creating a collection of tenant {t}"))?;
    }
    Ok(())
}

async fn load_document(store: &PgStore, data: &Dataset, job: &DocJob, n: usize) -> Result<()> {
    let tenant = &data.tenants[job.tenant];
    let ctx = TenantCtx::system(tenant.tenant);
    let collection = tenant.collections[job.collection];
    let id = DocumentId::new();
    let doc = trellis_rag::DocumentRepo::insert(
        store,
        &ctx,
        NewDocument {
            id,
            collection_id: collection,
            filename: format!("synthetic-{n}.md"),
            original_name: format!("synthetic-{n}.md"),
            mime_type: "text/markdown".into(),
            size_bytes: 100 * job.rows.len() as u64,
            checksum: format!("{:064x}", id.as_uuid().as_u128()),
            storage_key: format!("bench/{collection}/{id}"),
            source_type: SourceType::Upload,
            source_id: None,
            metadata: BTreeMap::new(),
            uploaded_by: None,
        },
    )
    .await
    .with_context(|| format!("creating a document of tenant {}", job.tenant))?;
    let chunks = job
        .rows
        .iter()
        .enumerate()
        .map(|(position, &row)| {
            let position = u32::try_from(position)?;
            Ok(EmbeddedChunk {
                chunk: Chunk {
                    id: tenant.chunks[row],
                    document_id: doc.id,
                    collection_id: collection,
                    position,
                    content: format!("Synthetic chunk {row} of tenant {}.", job.tenant),
                    span: Span {
                        start: position * 100,
                        end: position * 100 + 100,
                        page: None,
                        section: None,
                    },
                    token_count: 8,
                    source_type: SourceType::Upload,
                    metadata: BTreeMap::new(),
                },
                embedding: Embedding::new(tenant.vector(row).to_vec())?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    trellis_rag::ChunkRepo::replace_for_document(store, &ctx, doc.id, chunks)
        .await
        .with_context(|| format!("storing chunks of tenant {}", job.tenant))?;
    Ok(())
}

/// Runs `jobs` on `workers` concurrent tasks (each holding at most one pooled
/// connection at a time); returns the seconds taken.
async fn run_doc_jobs(
    store: &PgStore,
    data: &Arc<Dataset>,
    jobs: Vec<DocJob>,
    workers: usize,
) -> Result<f64> {
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let (store, data, jobs, next) = (store.clone(), data.clone(), jobs.clone(), next.clone());
        set.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(n) else {
                    return Ok::<(), anyhow::Error>(());
                };
                load_document(&store, &data, job, n).await?;
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn run_tenant_creation(
    store: &PgStore,
    data: &Arc<Dataset>,
    adopted: &Arc<HashSet<usize>>,
    workers: usize,
    seed: u64,
) -> Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let (store, data, adopted, next) =
            (store.clone(), data.clone(), adopted.clone(), next.clone());
        set.spawn(async move {
            loop {
                let t = next.fetch_add(1, Ordering::Relaxed);
                if t >= data.tenants.len() {
                    return Ok::<(), anyhow::Error>(());
                }
                create_tenant(&store, &data, t, adopted.contains(&t), seed).await?;
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn connect_one(url: &str) -> Result<DatabaseConnection> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    Database::connect(opts)
        .await
        .context("could not connect to Postgres")
}

fn stmt(sql: impl Into<String>) -> Statement {
    Statement::from_string(DbBackend::Postgres, sql.into())
}

async fn scalar_i64(db: &DatabaseConnection, sql: &str) -> Result<i64> {
    let row = db
        .query_one_raw(stmt(sql))
        .await
        .with_context(|| format!("running {sql}"))?
        .with_context(|| format!("no row from {sql}"))?;
    Ok(row.try_get_by_index(0)?)
}

async fn scalar_text(db: &DatabaseConnection, sql: &str) -> Result<String> {
    let row = db
        .query_one_raw(stmt(sql))
        .await
        .with_context(|| format!("running {sql}"))?
        .with_context(|| format!("no row from {sql}"))?;
    Ok(row.try_get_by_index(0)?)
}

/// The chunks stored, counted tenant by tenant as the app role (row-level security shows
/// a transaction only its tenant's rows).
async fn stored_rows(store: &PgStore, data: &Dataset) -> Result<i64> {
    let mut rows = 0;
    for tenant in &data.tenants {
        let txn = store.connection().begin().await?;
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config('trellis.tenant_id', $1, true)",
            [tenant.tenant.to_string().into()],
        ))
        .await?;
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT count(*) FROM chunks WHERE tenant_id = $1",
                [tenant.tenant.as_uuid().into()],
            ))
            .await?
            .context("no row from count(*)")?;
        rows += row.try_get_by_index::<i64>(0)?;
        txn.commit().await?;
    }
    Ok(rows)
}

// ----- Postgres: searching ---------------------------------------------------------------

/// A way of searching Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Plain `WHERE tenant_id = $1 ORDER BY … LIMIT 10`, pgvector's defaults.
    Baseline,
    /// The same with `enable_sort = off`: HNSW is the only ordered path left.
    BaselineHnsw,
    /// `VectorIndex::search` as the app wires it: the in-process replica
    /// (`PgVectorCache`) in front of the adapter.
    Ours,
    /// The adapter's own SQL search (exact scan or HNSW with iterative scans), which
    /// the replica falls back to; what the app does with the replica turned off.
    OursSql,
    /// The same on connections that always plan for the actual parameters.
    OursCustomPlans,
}

/// Everything the search tasks share.
struct Shared {
    data: Dataset,
    store: PgStore,
    /// The replica the app puts in front of `store`.
    replica: PgVectorCache,
    /// The adapter on connections with `plan_cache_mode = force_custom_plan`.
    store_custom_plans: PgStore,
    queries: Vec<Embedding>,
    vectors: Vec<PgVector>,
    baseline_sql: String,
}

/// The baseline's statement: the tenant filter and the index's expression and predicate,
/// so the planner can use `chunks_embedding_<dim>_hnsw` (it may still prefer the tenant's
/// B-tree and a sort, which is exact).
fn baseline_sql(dim: usize) -> String {
    format!(
        "SELECT id FROM chunks WHERE tenant_id = $1 AND embedding_dim = {dim} \
         ORDER BY embedding::vector({dim}) <=> $2::vector({dim}) LIMIT {K}"
    )
}

/// pgvector's defaults, set explicitly so a server configured otherwise still measures
/// the baseline: `ef_search` 40, iterative scans off; and a plan for the actual tenant
/// every time (see the module documentation on generic plans).
fn baseline_settings(force_hnsw: bool) -> &'static str {
    if force_hnsw {
        "SELECT set_config('trellis.tenant_id', $1, true), \
                set_config('hnsw.ef_search', '40', true), \
                set_config('hnsw.iterative_scan', 'off', true), \
                set_config('plan_cache_mode', 'force_custom_plan', true), \
                set_config('enable_sort', 'off', true)"
    } else {
        "SELECT set_config('trellis.tenant_id', $1, true), \
                set_config('hnsw.ef_search', '40', true), \
                set_config('hnsw.iterative_scan', 'off', true), \
                set_config('plan_cache_mode', 'force_custom_plan', true)"
    }
}

/// `url` with one more query parameter.
fn with_url_param(url: &str, key: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{key}={value}")
}

async fn baseline_search(shared: &Shared, q: usize, force_hnsw: bool) -> Result<Vec<ChunkId>> {
    let tenant = shared.data.tenants[shared.data.queries[q].tenant].tenant;
    let txn = shared.store.connection().begin().await?;
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        baseline_settings(force_hnsw),
        [tenant.to_string().into()],
    ))
    .await?;
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            shared.baseline_sql.as_str(),
            [tenant.as_uuid().into(), shared.vectors[q].clone().into()],
        ))
        .await?;
    txn.commit().await?;
    rows.iter()
        .map(|row| Ok(ChunkId::from_uuid(row.try_get_by_index::<uuid::Uuid>(0)?)))
        .collect()
}

async fn search(shared: &Shared, way: Way, q: usize) -> Result<Vec<ChunkId>> {
    match way {
        Way::Baseline => baseline_search(shared, q, false).await,
        Way::BaselineHnsw => baseline_search(shared, q, true).await,
        Way::Ours | Way::OursSql | Way::OursCustomPlans => {
            let tenant = shared.data.tenants[shared.data.queries[q].tenant].tenant;
            let index: &dyn trellis_rag::VectorIndex = match way {
                Way::Ours => &shared.replica,
                Way::OursSql => &shared.store,
                _ => &shared.store_custom_plans,
            };
            let hits = trellis_rag::VectorIndex::search(
                index,
                &TenantCtx::system(tenant),
                &shared.queries[q],
                &SearchFilter::default(),
                K,
            )
            .await?;
            Ok(hits.into_iter().map(|h| h.chunk).collect())
        }
    }
}

/// Whole passes from `offset` until `min_seconds`; (queries, seconds, samples).
async fn pg_passes(
    shared: Arc<Shared>,
    way: Way,
    offset: usize,
    min_seconds: f64,
    record: bool,
) -> Result<(usize, f64, Vec<(usize, f64)>)> {
    let n = shared.queries.len();
    let mut samples = Vec::new();
    let started = Instant::now();
    let mut done = 0;
    loop {
        for i in 0..n {
            let q = (offset + i) % n;
            let t = Instant::now();
            black_box(search(&shared, way, q).await?);
            if record {
                samples.push((q, t.elapsed().as_secs_f64() * 1e6));
            }
        }
        done += n;
        let secs = started.elapsed().as_secs_f64();
        if secs >= min_seconds {
            return Ok((done, secs, samples));
        }
    }
}

async fn measure_pg(
    shared: &Arc<Shared>,
    truth: &GroundTruth,
    way: Way,
    min_seconds: f64,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    for q in 0..shared.queries.len() {
        let hits = search(shared, way, q).await?;
        if is_short(&shared.data, q, hits.len()) {
            outcome.short_of_k += 1;
        }
        outcome.recall.push(truth.recall(q, &hits));
    }
    let (n, secs, samples) = pg_passes(shared.clone(), way, 0, min_seconds, true).await?;
    outcome.latencies = samples;
    outcome.qps_1 = n as f64 / secs;
    let started = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..2 {
        let offset = t * shared.queries.len() / 2;
        set.spawn(pg_passes(shared.clone(), way, offset, min_seconds, false));
    }
    let mut done = 0;
    while let Some(result) = set.join_next().await {
        done += result??.0;
    }
    outcome.qps_2 = done as f64 / started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// For the baseline with default settings: the share of queries (and of distinct
/// tenants) whose plan uses the HNSW index, found with `EXPLAIN` per tenant.
async fn baseline_plans(shared: &Shared, index_name: &str) -> Result<Value> {
    let mut by_tenant: HashMap<usize, bool> = HashMap::new();
    for query in &shared.data.queries {
        if by_tenant.contains_key(&query.tenant) {
            continue;
        }
        let tenant = shared.data.tenants[query.tenant].tenant;
        let txn = shared.store.connection().begin().await?;
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            baseline_settings(false),
            [tenant.to_string().into()],
        ))
        .await?;
        let rows = txn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!("EXPLAIN {}", shared.baseline_sql),
                [tenant.as_uuid().into(), shared.vectors[0].clone().into()],
            ))
            .await?;
        txn.commit().await?;
        let mut uses = false;
        for row in &rows {
            let line: String = row.try_get_by_index(0)?;
            uses |= line.contains(index_name);
        }
        by_tenant.insert(query.tenant, uses);
    }
    let queries_hnsw = shared
        .data
        .queries
        .iter()
        .filter(|q| by_tenant.get(&q.tenant).copied().unwrap_or(false))
        .count();
    let largest_hnsw_free = (0..shared.data.tenants.len())
        .filter(|t| by_tenant.get(t) == Some(&false))
        .map(|t| shared.data.tenants[t].len())
        .max();
    Ok(json!({
        "queries_using_hnsw": queries_hnsw,
        "queries": shared.data.queries.len(),
        "tenants_using_hnsw": by_tenant.values().filter(|u| **u).count(),
        "tenants_queried": by_tenant.len(),
        "largest_tenant_planned_without_hnsw": largest_hnsw_free,
    }))
}

// ----- the run ---------------------------------------------------------------------------

fn resolve_adoptions(args: &Args, data: &Dataset) -> Result<Vec<(usize, uuid::Uuid)>> {
    let sizes: Vec<usize> = data.tenants.iter().map(|t| t.len()).collect();
    let mut out: Vec<(usize, uuid::Uuid)> = Vec::new();
    for (pick, id) in &args.adopt {
        let t = match pick {
            Pick::Largest => 0,
            Pick::Median => traffic_median(&sizes),
            Pick::Index(n) => *n,
        };
        if t >= data.tenants.len() {
            bail!(
                "--adopt names tenant {t}, but there are {}",
                data.tenants.len()
            );
        }
        if out.iter().any(|(other, _)| *other == t) {
            bail!("--adopt names tenant {t} twice (too few tenants for largest and median?)");
        }
        out.push((t, *id));
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let app_url = env("DATABASE_URL")?;
    let owner_url = env("TRELLIS_MIGRATION_DATABASE_URL")?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    progress!("{cpus} CPUs, load average {}", load_average());

    // --- data ---
    let started = Instant::now();
    let mut config = SynthConfig::new(args.seed, args.vectors, args.tenants);
    config.queries = args.queries;
    let mut data = config.generate();
    let generate_s = started.elapsed().as_secs_f64();
    let adoptions = resolve_adoptions(&args, &data)?;
    for (t, id) in &adoptions {
        data.tenants[*t].tenant = TenantId::from_uuid(*id);
    }
    let started = Instant::now();
    let truth = ground_truth(&data, K);
    let truth_s = started.elapsed().as_secs_f64();
    let sizes: Vec<usize> = data.tenants.iter().map(|t| t.len()).collect();
    let dim = data.dimension;
    let data_json = json!({
        "seed": args.seed,
        "vectors": data.total_vectors(),
        "tenants": data.tenants.len(),
        "dimension": dim,
        "largest_tenant": sizes.first().copied().unwrap_or(0),
        "second_tenant": sizes.get(1).copied().unwrap_or(0),
        "tenants_gt_20k": sizes.iter().filter(|&&s| s > LARGE).count(),
        "queries": data.queries.len(),
        "queries_off_topic": data.queries.iter().filter(|q| q.off_topic).count(),
        "queries_tenants_gt_20k": (0..data.queries.len()).filter(|&q| Class::Large.holds(&data, q)).count(),
        "generate_s": generate_s,
        "ground_truth_s": truth_s,
    });
    progress!(
        "data: {} vectors over {} tenants (largest {}), {} queries; generated in {generate_s:.1} s, ground truth in {truth_s:.1} s",
        data.total_vectors(),
        data.tenants.len(),
        sizes.first().copied().unwrap_or(0),
        data.queries.len()
    );
    let queries = embeddings(&data)?;

    // --- kernels ---
    let kernel_json = if args.kernel {
        let rows = if args.vectors >= 100_000 {
            400_000
        } else {
            200_000
        };
        progress!("scan kernels: streaming {rows} × {dim} f32");
        kernels(dim, rows)
    } else {
        Value::Null
    };

    // --- in-process ---
    progress!("in-process: loading");
    let rss_before = rss_bytes();
    let (index, load_s) = load_in_process(&data)?;
    let rss_after = rss_bytes();
    let stats = index.stats();
    progress!(
        "in-process: {} vectors in {load_s:.2} s; searching (load average {})",
        stats.vectors,
        load_average()
    );
    let mem = measure_in_process(&index, &data, &truth, &queries, args.min_seconds);
    let in_process_json = json!({
        "config": format!("default IndexConfig: exact ≤ {}, HNSW above", index.config().exact_max),
        "exact_max": index.config().exact_max,
        "insert_vectors_per_s": stats.vectors as f64 / load_s.max(1e-9),
        "insert_s": load_s,
        "rss_bytes_per_vector": rss_after.saturating_sub(rss_before) as f64 / stats.vectors.max(1) as f64,
        "estimated_bytes_per_vector": stats.memory_bytes as f64 / stats.vectors.max(1) as f64,
        "graph_partitions": stats.graph_partitions,
        "search": mem.json("in-process", &data),
        "load_average_after": load_average(),
    });
    drop(index);

    // --- Postgres: load ---
    progress!("postgres: migrating");
    trellis_postgres::migrate(&owner_url).await?;
    let owner = connect_one(&owner_url).await?;
    let existing = scalar_i64(
        &owner,
        "SELECT count(*) FROM (SELECT 1 FROM chunks LIMIT 1) c",
    )
    .await?;
    if existing > 0 {
        bail!(
            "the chunks table is not empty: run this against a fresh database (cargo xtask bench rag makes one)"
        );
    }
    let index_name = format!("chunks_embedding_{dim}_hnsw");
    let index_def = scalar_text(
        &owner,
        &format!("SELECT pg_get_indexdef('{index_name}'::regclass)"),
    )
    .await
    .with_context(|| format!("no HNSW index {index_name} for {dim}-d vectors"))?;
    let store = PgStore::connect(&app_url, 4).await?;
    let data = Arc::new(data);
    let adopted: Arc<HashSet<usize>> = Arc::new(adoptions.iter().map(|(t, _)| *t).collect());
    progress!(
        "postgres: creating {} tenants and their collections ({} adopted)",
        data.tenants.len(),
        adopted.len()
    );
    let tenants_s =
        run_tenant_creation(&store, &data, &adopted, args.load_connections, args.seed).await?;

    let live = args.live_tenant.min(data.tenants.len() - 1);
    let live_vectors = data.tenants[live].len();
    let bulk_vectors = data.total_vectors() - live_vectors;
    owner
        .execute_unprepared(&format!("DROP INDEX {index_name}"))
        .await
        .context("dropping the HNSW index for the bulk load")?;
    progress!(
        "postgres: bulk insert of {bulk_vectors} vectors, HNSW index dropped, {} connections",
        args.load_connections
    );
    let jobs = doc_jobs(&data, (0..data.tenants.len()).filter(|&t| t != live));
    let documents = jobs.len();
    let bulk_s = run_doc_jobs(&store, &data, jobs, args.load_connections).await?;
    progress!(
        "postgres: {:.0} vectors/s; building the HNSW index",
        bulk_vectors as f64 / bulk_s
    );
    let started = Instant::now();
    let txn = owner.begin().await?;
    txn.execute_unprepared("SET LOCAL maintenance_work_mem = '1GB'")
        .await?;
    txn.execute_unprepared(&index_def)
        .await
        .context("rebuilding the HNSW index")?;
    txn.commit().await?;
    let build_s = started.elapsed().as_secs_f64();
    progress!(
        "postgres: index built in {build_s:.1} s; inserting tenant {live} ({live_vectors} vectors) into the indexed table"
    );
    let live_jobs = doc_jobs(&data, std::iter::once(live));
    let live_s = run_doc_jobs(&store, &data, live_jobs, args.load_connections).await?;
    let started = Instant::now();
    owner
        .execute_unprepared("VACUUM (ANALYZE) chunks")
        .await
        .context("VACUUM ANALYZE chunks")?;
    let vacuum_s = started.elapsed().as_secs_f64();
    let rows = stored_rows(&store, &data).await?;
    if rows != data.total_vectors() as i64 {
        bail!(
            "{rows} chunks are stored, {} were inserted",
            data.total_vectors()
        );
    }
    let size = |sql: String| {
        let owner = &owner;
        async move { scalar_i64(owner, &sql).await }
    };
    let heap = size("SELECT pg_relation_size('chunks')".into()).await?;
    let table = size("SELECT pg_table_size('chunks')".into()).await?;
    let indexes = size("SELECT pg_indexes_size('chunks')".into()).await?;
    let hnsw = size(format!("SELECT pg_relation_size('{index_name}')")).await?;
    let total = size("SELECT pg_total_relation_size('chunks')".into()).await?;
    let per = |bytes: i64| bytes as f64 / rows.max(1) as f64;
    let load_json = json!({
        "connections": args.load_connections,
        "documents": documents,
        "chunks_per_document": DOC_CHUNKS,
        "tenants_and_collections_s": tenants_s,
        "bulk_vectors": bulk_vectors,
        "bulk_s": bulk_s,
        "bulk_vectors_per_s": bulk_vectors as f64 / bulk_s,
        "hnsw_build_s": build_s,
        "hnsw_build_vectors": bulk_vectors,
        "bulk_plus_build_vectors_per_s": bulk_vectors as f64 / (bulk_s + build_s),
        "live_tenant": live,
        "live_vectors": live_vectors,
        "live_s": live_s,
        "live_vectors_per_s": live_vectors as f64 / live_s,
        "vacuum_analyze_s": vacuum_s,
        "index_definition": index_def,
    });
    let sizes_json = json!({
        "rows": rows,
        "heap_bytes": heap,
        "table_bytes_incl_toast": table,
        "indexes_bytes": indexes,
        "hnsw_bytes": hnsw,
        "total_bytes": total,
        "heap_bytes_per_vector": per(heap),
        "table_bytes_per_vector": per(table),
        "hnsw_bytes_per_vector": per(hnsw),
        "indexes_bytes_per_vector": per(indexes),
        "total_bytes_per_vector": per(total),
    });
    progress!(
        "postgres: {rows} rows, {:.0} bytes per vector in all (HNSW {:.0}); vacuum/analyze {vacuum_s:.1} s",
        per(total),
        per(hnsw)
    );

    // --- Postgres: search ---
    let data = Arc::try_unwrap(data).map_err(|_| anyhow::anyhow!("dataset still shared"))?;
    let shared = Arc::new(Shared {
        vectors: data
            .queries
            .iter()
            .map(|q| PgVector::from(q.vector.clone()))
            .collect(),
        baseline_sql: baseline_sql(dim),
        data,
        replica: PgVectorCache::new(store.clone(), DEFAULT_MAX_VECTORS),
        store,
        store_custom_plans: PgStore::connect(
            &with_url_param(&app_url, "options[plan_cache_mode]", "force_custom_plan"),
            4,
        )
        .await?,
        queries,
    });
    let plans = baseline_plans(&shared, &index_name).await?;
    progress!("postgres: baseline plans: {plans}");
    let mut ways = serde_json::Map::new();
    for (way, key, label) in [
        (
            Way::Baseline,
            "baseline",
            "baseline: WHERE tenant_id, ef_search 40, no iterative scan",
        ),
        (
            Way::BaselineHnsw,
            "baseline_hnsw_forced",
            "baseline, HNSW forced (enable_sort off)",
        ),
        (
            Way::Ours,
            "ours",
            "our method: in-process replica over Postgres (the app's default)",
        ),
        (
            Way::OursSql,
            "ours_sql",
            "our SQL path: exact scan <= 20k rows, HNSW iterative above (replica off)",
        ),
        (
            Way::OursCustomPlans,
            "ours_custom_plans",
            "our method, plan_cache_mode = force_custom_plan",
        ),
    ] {
        progress!(
            "postgres: searching, {label} (load average {})",
            load_average()
        );
        let outcome = measure_pg(&shared, &truth, way, args.min_seconds).await?;
        let mut figures = outcome.json(label, &shared.data);
        figures["load_average_after"] = json!(load_average());
        progress!(
            "postgres: {key}: QPS {:.0} / {:.0}, short of k {}",
            outcome.qps_1,
            outcome.qps_2,
            outcome.short_of_k
        );
        ways.insert(key.to_owned(), figures);
    }

    let adopted_json: Vec<Value> = adoptions
        .iter()
        .map(|(t, id)| {
            json!({
                "tenant_index": t,
                "tenant_id": id,
                "vectors": shared.data.tenants[*t].len(),
                "collection_ids": shared.data.tenants[*t]
                    .collections
                    .iter()
                    .map(|c| c.as_uuid().to_string())
                    .collect::<Vec<_>>(),
                "path": if shared.data.tenants[*t].len() > LARGE { "hnsw" } else { "exact" },
            })
        })
        .collect();
    let report = json!({
        "runner": "trellis-postgres example rag_bench",
        "k": K,
        "cpus": cpus,
        "min_seconds": args.min_seconds,
        "data": data_json,
        "kernels": kernel_json,
        "in_process": in_process_json,
        "postgres": {
            "load": load_json,
            "sizes": sizes_json,
            "baseline_plans": plans,
            "search": ways,
        },
        "adopted": adopted_json,
        "load_average_end": load_average(),
    });
    let text = serde_json::to_string_pretty(&report)?;
    match &args.out {
        Some(path) => std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("could not write {}", path.display()))?,
        None => println!("{text}"),
    }
    progress!("done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn no_arguments_give_issue_3s_data_set() -> Result<()> {
        let args = parse_args(Vec::new())?;
        assert_eq!(args, Args::default());
        assert_eq!(
            (args.vectors, args.tenants, args.queries),
            (200_000, 1_000, 2_000)
        );
        Ok(())
    }

    #[test]
    fn every_option_is_read_and_adoptions_name_a_tenant_and_an_id() -> Result<()> {
        let id = "0190f0aa-0000-7000-8000-000000000001";
        let args = parse_args(strings(&[
            "--vectors",
            "50000",
            "--tenants",
            "5",
            "--queries",
            "300",
            "--seed",
            "7",
            "--min-seconds",
            "1.5",
            "--skip-kernel",
            "--adopt",
            &format!("largest={id}"),
            "--adopt",
            &format!("median={id}"),
            "--adopt",
            &format!("3={id}"),
            "--out",
            "x.json",
        ]))?;
        assert_eq!(
            (args.vectors, args.tenants, args.queries, args.seed),
            (50_000, 5, 300, 7)
        );
        assert!((args.min_seconds - 1.5).abs() < 1e-12);
        assert!(!args.kernel);
        let picks: Vec<Pick> = args.adopt.iter().map(|(p, _)| *p).collect();
        assert_eq!(picks, vec![Pick::Largest, Pick::Median, Pick::Index(3)]);
        assert_eq!(args.adopt[0].1, uuid::Uuid::parse_str(id)?);
        assert_eq!(args.out, Some(PathBuf::from("x.json")));
        Ok(())
    }

    #[test]
    fn bad_arguments_are_errors_not_defaults() {
        assert!(parse_args(strings(&["--vectors", "many"])).is_err());
        assert!(parse_args(strings(&["--vectors"])).is_err());
        assert!(parse_args(strings(&["--queries", "0"])).is_err());
        assert!(parse_args(strings(&["--adopt", "largest"])).is_err());
        assert!(
            parse_args(strings(&[
                "--adopt",
                "biggest=0190f0aa-0000-7000-8000-000000000001"
            ]))
            .is_err()
        );
        assert!(parse_args(strings(&["--frobnicate", "1"])).is_err());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v = sorted((1..=101).map(f64::from).rev().collect());
        assert!((percentile(&v, 50.0) - 51.0).abs() < 1e-12);
        assert!((percentile(&v, 99.0) - 100.0).abs() < 1e-12);
        assert!((percentile(&v, 5.0) - 6.0).abs() < 1e-12);
        assert!((percentile(&[3.0], 99.0) - 3.0).abs() < 1e-12);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn the_median_query_goes_where_half_of_the_vectors_are_reached() {
        assert_eq!(traffic_median(&[60, 30, 10]), 0);
        assert_eq!(traffic_median(&[40, 30, 20, 10]), 1);
        assert_eq!(traffic_median(&[50, 50]), 0);
        assert_eq!(traffic_median(&[]), 0);
    }

    #[test]
    fn documents_hold_at_most_500_chunks_of_one_collection() {
        let data = SynthConfig::new(1, 1_300, 2).generate();
        let jobs = doc_jobs(&data, 0..2);
        assert!(
            jobs.iter()
                .all(|j| !j.rows.is_empty() && j.rows.len() <= DOC_CHUNKS)
        );
        let total: usize = jobs.iter().map(|j| j.rows.len()).sum();
        assert_eq!(total, 1_300);
        let skipped = doc_jobs(&data, std::iter::once(1));
        assert!(skipped.iter().all(|j| j.tenant == 1));
    }

    #[test]
    fn the_baseline_repeats_the_index_expression_and_predicate() {
        let sql = baseline_sql(384);
        assert!(sql.contains("embedding_dim = 384"));
        assert!(sql.contains("ORDER BY embedding::vector(384) <=> $2::vector(384) LIMIT 10"));
        assert!(baseline_settings(true).contains("enable_sort"));
        assert!(!baseline_settings(false).contains("enable_sort"));
        assert!(baseline_settings(false).contains("'hnsw.ef_search', '40'"));
        assert!(baseline_settings(false).contains("'plan_cache_mode', 'force_custom_plan'"));
    }

    #[test]
    fn url_parameters_are_appended_after_the_right_separator() {
        assert_eq!(
            with_url_param("postgres://u@h/db", "options[a]", "b"),
            "postgres://u@h/db?options[a]=b"
        );
        assert_eq!(
            with_url_param("postgres://u@h/db?sslmode=disable", "options[a]", "b"),
            "postgres://u@h/db?sslmode=disable&options[a]=b"
        );
    }
}
