//! [`VectorIndex`]: the in-process, thread-safe vector index of all tenants, partitioned
//! by (tenant, collection).
//!
//! Locking: a map of tenants, each with a map of collections, each collection behind its
//! own `RwLock`. The maps are only read-locked on the search path, long enough to clone
//! an `Arc`, so searches of different tenants never wait for each other, searches of the
//! same partition share its read lock, and a write blocks only its own partition.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use trellis_kernel::TenantId;

use crate::index::partition::{Due, Partition, PartitionStats};
use crate::index::quant::PreparedQuery;
use crate::index::topk::TopK;
use crate::index::{ChunkId, CollectionId, Embedding, IndexConfig, IndexError};

/// One search result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub chunk: ChunkId,
    pub collection: CollectionId,
    /// Cosine similarity with the query, in [-1, 1].
    pub score: f32,
}

/// Counts over the whole index, for monitoring and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStats {
    pub tenants: usize,
    pub partitions: usize,
    /// Partitions that have an HNSW graph.
    pub graph_partitions: usize,
    pub vectors: usize,
    pub tombstones: usize,
    pub unlinked: usize,
    pub memory_bytes: usize,
}

type PartitionRef = Arc<RwLock<Partition>>;

/// The collections of one tenant.
#[derive(Default)]
struct Shard {
    collections: RwLock<HashMap<CollectionId, PartitionRef>>,
}

/// Graph nodes linked per write-lock acquisition during maintenance: ~1 ms of work at
/// 25 000 nodes, so a search of the same partition waits at most about that long.
const LINK_BATCH: usize = 8;

/// Vectors appended per write-lock acquisition by [`VectorIndex::upsert_batch`].
const WRITE_BATCH: usize = 256;

/// Rebuilds one maintenance call may run on a partition before it leaves the rest to the
/// next call (a rebuild can become due again if heavy writes overlap it).
const MAX_REBUILDS_PER_CALL: usize = 2;

/// The in-process vector index. See the module documentation of [`crate::index`].
pub struct VectorIndex {
    config: IndexConfig,
    ef_search: AtomicUsize,
    tenants: RwLock<HashMap<TenantId, Arc<Shard>>>,
}

impl fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorIndex")
            .field("config", &self.config)
            .field("len", &self.len())
            .finish()
    }
}

/// Locks for reading; a panic elsewhere while a lock was held leaves the data as the
/// panicking writer left it, which is still consistent because every write validates
/// before it mutates, so poisoning is not treated as fatal.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl VectorIndex {
    /// An empty index.
    ///
    /// # Errors
    /// [`IndexError::InvalidConfig`] when the configuration cannot work.
    pub fn new(config: IndexConfig) -> Result<Self, IndexError> {
        config.validate()?;
        Ok(Self {
            ef_search: AtomicUsize::new(config.hnsw.ef_search),
            config,
            tenants: RwLock::new(HashMap::new()),
        })
    }

    #[must_use]
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// Changes the HNSW search breadth for searches from now on (recall vs. speed).
    pub fn set_ef_search(&self, ef: usize) {
        self.ef_search.store(ef.max(1), Ordering::Relaxed);
    }

    fn check(&self, embedding: &Embedding) -> Result<(), IndexError> {
        if embedding.dimension() == self.config.dimension {
            Ok(())
        } else {
            Err(IndexError::DimensionMismatch {
                expected: self.config.dimension,
                actual: embedding.dimension(),
            })
        }
    }

    fn shard(&self, tenant: TenantId) -> Option<Arc<Shard>> {
        read(&self.tenants).get(&tenant).cloned()
    }

    fn partition(&self, tenant: TenantId, collection: CollectionId) -> Option<PartitionRef> {
        self.shard(tenant)
            .and_then(|s| read(&s.collections).get(&collection).cloned())
    }

    fn partition_or_create(&self, tenant: TenantId, collection: CollectionId) -> PartitionRef {
        let shard = match self.shard(tenant) {
            Some(shard) => shard,
            None => Arc::clone(write(&self.tenants).entry(tenant).or_default()),
        };
        if let Some(p) = read(&shard.collections).get(&collection) {
            return Arc::clone(p);
        }
        let mut collections = write(&shard.collections);
        Arc::clone(
            collections
                .entry(collection)
                .or_insert_with(|| Arc::new(RwLock::new(Partition::new(self.config.dimension)))),
        )
    }

    /// Adds or replaces the vector of `chunk` in `collection`; searchable when this
    /// returns. Returns true if it replaced one.
    ///
    /// # Errors
    /// [`IndexError::DimensionMismatch`].
    pub fn upsert(
        &self,
        tenant: TenantId,
        collection: CollectionId,
        chunk: ChunkId,
        embedding: &Embedding,
    ) -> Result<bool, IndexError> {
        self.check(embedding)?;
        let partition = self.partition_or_create(tenant, collection);
        let replaced = write(&partition).upsert(chunk, embedding.as_slice());
        self.after_write(&partition);
        Ok(replaced)
    }

    /// Adds the vector of a chunk that must not be in `collection` yet.
    ///
    /// # Errors
    /// [`IndexError::AlreadyExists`], [`IndexError::DimensionMismatch`].
    pub fn insert(
        &self,
        tenant: TenantId,
        collection: CollectionId,
        chunk: ChunkId,
        embedding: &Embedding,
    ) -> Result<(), IndexError> {
        self.check(embedding)?;
        let partition = self.partition_or_create(tenant, collection);
        {
            let mut p = write(&partition);
            if p.contains(chunk) {
                return Err(IndexError::AlreadyExists(chunk));
            }
            p.upsert(chunk, embedding.as_slice());
        }
        self.after_write(&partition);
        Ok(())
    }

    /// [`Self::upsert`] of many chunks of one collection (e.g. a document's). All are
    /// validated before any is written; returns how many replaced an existing vector.
    ///
    /// # Errors
    /// [`IndexError::DimensionMismatch`] if any embedding has the wrong length (then
    /// nothing is written).
    pub fn upsert_batch(
        &self,
        tenant: TenantId,
        collection: CollectionId,
        items: &[(ChunkId, Embedding)],
    ) -> Result<usize, IndexError> {
        for (_, embedding) in items {
            self.check(embedding)?;
        }
        if items.is_empty() {
            return Ok(0);
        }
        let partition = self.partition_or_create(tenant, collection);
        let mut replaced = 0;
        // In slices, so searches of this partition get the lock between them.
        for slice in items.chunks(WRITE_BATCH) {
            let mut p = write(&partition);
            for (chunk, embedding) in slice {
                replaced += usize::from(p.upsert(*chunk, embedding.as_slice()));
            }
        }
        self.after_write(&partition);
        Ok(replaced)
    }

    /// Removes `chunk` from `collection`; true if it was there. Never returned again by
    /// a search that starts after this returns.
    pub fn delete(&self, tenant: TenantId, collection: CollectionId, chunk: ChunkId) -> bool {
        self.delete_many(tenant, collection, &[chunk]) > 0
    }

    /// Removes several chunks of one collection; returns how many were there.
    pub fn delete_many(
        &self,
        tenant: TenantId,
        collection: CollectionId,
        chunks: &[ChunkId],
    ) -> usize {
        let Some(partition) = self.partition(tenant, collection) else {
            return 0;
        };
        let removed = {
            let mut p = write(&partition);
            chunks.iter().filter(|&&c| p.delete(c)).count()
        };
        if removed > 0 {
            self.after_write(&partition);
        }
        removed
    }

    /// Drops a whole collection; returns how many vectors it held.
    pub fn delete_collection(&self, tenant: TenantId, collection: CollectionId) -> usize {
        let Some(shard) = self.shard(tenant) else {
            return 0;
        };
        let removed = write(&shard.collections).remove(&collection);
        removed.map_or(0, |p| read(&p).live_len())
    }

    /// Drops everything of a tenant; returns how many vectors it held.
    pub fn delete_tenant(&self, tenant: TenantId) -> usize {
        let removed = write(&self.tenants).remove(&tenant);
        removed.map_or(0, |shard| {
            read(&shard.collections)
                .values()
                .map(|p| read(p).live_len())
                .sum()
        })
    }

    /// The `k` chunks of `tenant` most similar to `query` with a score of at least
    /// `min_score`, best first, from `collections` (all of the tenant's when empty).
    /// Returns fewer than `k` only when fewer qualify; a NaN `min_score` means none.
    /// Partitions of at most `exact_max` vectors are searched exactly; larger ones
    /// approximately (see `docs/benchmarks.md` for the measured recall).
    ///
    /// # Errors
    /// [`IndexError::DimensionMismatch`].
    pub fn search(
        &self,
        tenant: TenantId,
        collections: &[CollectionId],
        query: &Embedding,
        k: usize,
        min_score: f32,
    ) -> Result<Vec<Hit>, IndexError> {
        self.check(query)?;
        let min_score = if min_score.is_nan() {
            f32::NEG_INFINITY
        } else {
            min_score
        };
        if k == 0 {
            return Ok(Vec::new());
        }
        let Some(shard) = self.shard(tenant) else {
            return Ok(Vec::new());
        };
        let partitions: Vec<(CollectionId, PartitionRef)> = {
            let map = read(&shard.collections);
            if collections.is_empty() {
                map.iter().map(|(c, p)| (*c, Arc::clone(p))).collect()
            } else {
                let wanted: HashSet<&CollectionId> = collections.iter().collect();
                wanted
                    .into_iter()
                    .filter_map(|c| map.get(c).map(|p| (*c, Arc::clone(p))))
                    .collect()
            }
        };
        let prepared = PreparedQuery::new(query.as_slice());
        let ef = self.ef_search.load(Ordering::Relaxed);
        let mut top = TopK::new(k);
        for (collection, partition) in &partitions {
            let hits = read(partition).search(&prepared, k, min_score, ef, &self.config);
            for (chunk, score) in hits {
                top.push(score, (*collection, chunk));
            }
        }
        Ok(top
            .into_sorted()
            .into_iter()
            .map(|s| Hit {
                chunk: s.item.1,
                collection: s.item.0,
                score: s.score,
            })
            .collect())
    }

    fn all_partitions(&self) -> Vec<PartitionRef> {
        let shards: Vec<Arc<Shard>> = read(&self.tenants).values().cloned().collect();
        shards
            .iter()
            .flat_map(|s| read(&s.collections).values().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Live vectors in the index.
    #[must_use]
    pub fn len(&self) -> usize {
        self.all_partitions()
            .iter()
            .map(|p| read(p).live_len())
            .sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live vectors of one tenant.
    #[must_use]
    pub fn tenant_len(&self, tenant: TenantId) -> usize {
        self.shard(tenant).map_or(0, |s| {
            read(&s.collections)
                .values()
                .map(|p| read(p).live_len())
                .sum()
        })
    }

    /// Shape of one partition, if it exists.
    #[must_use]
    pub fn partition_stats(
        &self,
        tenant: TenantId,
        collection: CollectionId,
    ) -> Option<PartitionStats> {
        self.partition(tenant, collection).map(|p| read(&p).stats())
    }

    /// Estimated heap bytes held by the index's vectors, codes, ids and graphs.
    #[must_use]
    pub fn memory_usage(&self) -> usize {
        self.stats().memory_bytes
    }

    #[must_use]
    pub fn stats(&self) -> IndexStats {
        let tenants = read(&self.tenants).len();
        let mut stats = IndexStats {
            tenants,
            ..IndexStats::default()
        };
        for p in self.all_partitions() {
            let s = read(&p).stats();
            stats.partitions += 1;
            stats.graph_partitions += usize::from(s.graph_nodes > 0);
            stats.vectors += s.live;
            stats.tombstones += s.tombstones;
            stats.unlinked += s.unlinked;
            stats.memory_bytes += s.memory_bytes;
        }
        stats
    }

    /// Runs whatever maintenance is due on every partition (graph builds, linking new
    /// vectors, compaction after deletes); returns how many partitions had work. Call it
    /// from a background task when `auto_maintain` is off; harmless when it is on.
    pub fn maintain(&self) -> usize {
        self.all_partitions()
            .iter()
            .filter(|p| self.maintain_partition(p))
            .count()
    }

    fn after_write(&self, partition: &PartitionRef) {
        if self.config.auto_maintain {
            self.maintain_partition(partition);
        }
    }

    /// Brings one partition up to date; true if there was anything to do.
    fn maintain_partition(&self, partition: &PartitionRef) -> bool {
        let mut rebuilds = 0;
        let mut worked = false;
        loop {
            let due = {
                let p = read(partition);
                if p.rebuild_log.is_some() {
                    Due::Nothing
                } else {
                    p.due(&self.config)
                }
            };
            match due {
                Due::Nothing => return worked,
                Due::Rebuild if rebuilds >= MAX_REBUILDS_PER_CALL => return worked,
                Due::Rebuild => {
                    rebuilds += 1;
                    self.rebuild(partition);
                }
                Due::Shrink => {
                    let mut p = write(partition);
                    if p.rebuild_log.is_none() {
                        p.shrink();
                    }
                }
                Due::Link => {
                    let mut p = write(partition);
                    if p.rebuild_log.is_none() {
                        p.link_tail(LINK_BATCH);
                    }
                }
            }
            worked = true;
        }
    }

    /// Replaces a partition by a freshly built one without holding its lock while
    /// building: claim (write lock, brief), copy the live vectors (read lock), build (no
    /// lock), then swap in and replay the writes that arrived meanwhile (write lock).
    fn rebuild(&self, partition: &PartitionRef) {
        {
            let mut p = write(partition);
            if p.rebuild_log.is_some() {
                return;
            }
            p.rebuild_log = Some(HashSet::new());
        }
        let claim = RebuildClaim {
            partition,
            done: false,
        };
        let snapshot = read(partition).snapshot();
        let mut fresh = Partition::build(&snapshot, &self.config);
        drop(snapshot);
        let old = {
            let mut p = write(partition);
            let touched = p.rebuild_log.take().unwrap_or_default();
            fresh.replay(&p, &touched);
            std::mem::replace(&mut *p, fresh)
        };
        claim.finish();
        // Freed after the lock is released: tens of MB for a large partition.
        drop(old);
    }
}

/// Clears the "rebuild in flight" mark if a rebuild unwinds half way, so the partition
/// is not left unmaintainable with an ever-growing log.
struct RebuildClaim<'a> {
    partition: &'a PartitionRef,
    done: bool,
}

impl RebuildClaim<'_> {
    fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for RebuildClaim<'_> {
    fn drop(&mut self) {
        if !self.done {
            write(self.partition).rebuild_log = None;
        }
    }
}
