//! The seeded synthetic data set of the RAG benchmark (issue 3), shared by this crate's
//! benchmarks and `cargo xtask bench rag`, which loads the same data into Postgres:
//!
//! - L2-normalised vectors from a Gaussian mixture: a direction common to all tenants
//!   (real embedding spaces are anisotropic), one per tenant, one per topic; each vector
//!   is a topic centroid plus isotropic noise, renormalised;
//! - tenant sizes follow Zipf's law (exponent 1: 200 000 vectors over 1 000 tenants gives
//!   a largest tenant of ~26 700, a median one of ~80), each tenant with its own few topics;
//! - queries are spread over tenants in proportion to their size (big tenants get the
//!   traffic), 90 % drawn like the tenant's own vectors and 10 % off-topic: from a topic no
//!   tenant has, so nothing in the tenant is really similar;
//! - ground truth by an exact scan of the query's tenant, in f64.
//!
//! The random stream is SplitMix64, written out here, so a seed names the same data on
//! every platform and with every version of every dependency.

use std::collections::HashSet;

use trellis_kernel::TenantId;

use crate::index::hnsw::split_mix;
use crate::index::{ChunkId, CollectionId};

/// Shape of a synthetic data set. [`SynthConfig::new`] gives issue 3's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    pub vectors: usize,
    pub tenants: usize,
    pub dimension: usize,
    /// Tenant `i` (0-based) gets a share proportional to `1 / (i + 1)^zipf_exponent`.
    pub zipf_exponent: f64,
    /// A tenant has one topic per this many vectors, at least one, at most `max_topics`.
    pub vectors_per_topic: usize,
    pub max_topics: usize,
    /// Norm of the noise added to a topic centroid (its own norm being 1): 0.9 makes two
    /// vectors of one topic ~0.55 similar and a vector ~0.75 similar to its centroid.
    pub noise: f32,
    pub queries: usize,
    pub off_topic_fraction: f64,
    /// Collections per tenant; a vector's collection is its topic modulo this.
    pub collections_per_tenant: usize,
}

impl SynthConfig {
    /// Issue 3's data set shape for `vectors` over `tenants`, 2 000 queries.
    #[must_use]
    pub fn new(seed: u64, vectors: usize, tenants: usize) -> Self {
        Self {
            seed,
            vectors,
            tenants,
            dimension: 384,
            zipf_exponent: 1.0,
            vectors_per_topic: 3_000,
            max_topics: 8,
            noise: 0.9,
            queries: 2_000,
            off_topic_fraction: 0.1,
            collections_per_tenant: 1,
        }
    }

    /// Generates the data set; the same config always gives the same data.
    #[must_use]
    pub fn generate(&self) -> Dataset {
        let dim = self.dimension.max(1);
        let mut rng = Rng::new(self.seed);
        let common = rng.unit(dim);
        let sizes = zipf_sizes(self.vectors, self.tenants, self.zipf_exponent);
        let topic = |rng: &mut Rng, tenant_direction: &[f32]| -> Vec<f32> {
            // Weights chosen so topics of one tenant are ~0.45 similar and topics of
            // different tenants ~0.1: related, not interchangeable.
            let own = rng.unit(dim);
            normalized(
                common
                    .iter()
                    .zip(tenant_direction)
                    .zip(&own)
                    .map(|((c, t), o)| 0.35 * c + 0.6 * t + 0.75 * o)
                    .collect(),
            )
        };
        let mut tenants = Vec::with_capacity(sizes.len());
        let mut topics_of = Vec::with_capacity(sizes.len());
        for &size in &sizes {
            let direction = rng.unit(dim);
            let n_topics =
                (size / self.vectors_per_topic.max(1) + 1).clamp(1, self.max_topics.max(1));
            let topics: Vec<Vec<f32>> =
                (0..n_topics).map(|_| topic(&mut rng, &direction)).collect();
            let collections: Vec<CollectionId> = (0..self.collections_per_tenant.max(1))
                .map(|_| CollectionId::from_uuid(rng.uuid()))
                .collect();
            let mut data = TenantData {
                tenant: TenantId::from_uuid(rng.uuid()),
                collections,
                chunks: Vec::with_capacity(size),
                collection_of: Vec::with_capacity(size),
                vectors: Vec::with_capacity(size * dim),
            };
            for _ in 0..size {
                let t = rng.below(n_topics);
                data.chunks.push(ChunkId::from_uuid(rng.uuid()));
                data.collection_of.push(t % data.collections.len());
                data.vectors.extend(rng.around(&topics[t], self.noise));
            }
            tenants.push(data);
            topics_of.push(topics);
        }
        let total: usize = sizes.iter().sum();
        let mut queries = Vec::with_capacity(self.queries);
        for _ in 0..self.queries {
            if total == 0 {
                break;
            }
            // Proportional to size: the i-th vector overall picks its tenant.
            let mut pick = rng.below(total);
            let tenant = sizes.iter().position(|&s| {
                if pick < s {
                    true
                } else {
                    pick -= s;
                    false
                }
            });
            let tenant = tenant.unwrap_or(0);
            let off_topic = rng.uniform() < self.off_topic_fraction;
            let centroid = if off_topic {
                let stranger = rng.unit(dim);
                topic(&mut rng, &stranger)
            } else {
                let topics = &topics_of[tenant];
                topics[rng.below(topics.len())].clone()
            };
            let vector = rng.around(&centroid, self.noise);
            queries.push(Query {
                tenant,
                vector,
                off_topic,
            });
        }
        Dataset {
            dimension: dim,
            tenants,
            queries,
        }
    }
}

/// [`SynthConfig::new`]`(seed, vectors, tenants).generate()`.
#[must_use]
pub fn generate(seed: u64, vectors: usize, tenants: usize) -> Dataset {
    SynthConfig::new(seed, vectors, tenants).generate()
}

/// A generated data set.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dimension: usize,
    /// Largest first.
    pub tenants: Vec<TenantData>,
    pub queries: Vec<Query>,
}

impl Dataset {
    #[must_use]
    pub fn total_vectors(&self) -> usize {
        self.tenants.iter().map(TenantData::len).sum()
    }
}

/// The vectors of one tenant, in generation order.
#[derive(Debug, Clone)]
pub struct TenantData {
    pub tenant: TenantId,
    pub collections: Vec<CollectionId>,
    pub chunks: Vec<ChunkId>,
    /// Index into `collections` of each vector.
    pub collection_of: Vec<usize>,
    /// `len() × dimension` components, row after row, each row unit length.
    pub vectors: Vec<f32>,
}

impl TenantData {
    #[must_use]
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Row `i`.
    #[must_use]
    pub fn vector(&self, i: usize) -> &[f32] {
        let dim = self.vectors.len() / self.chunks.len().max(1);
        &self.vectors[i * dim..(i + 1) * dim]
    }

    /// The collection of row `i`.
    #[must_use]
    pub fn collection(&self, i: usize) -> CollectionId {
        self.collections[self.collection_of[i]]
    }
}

/// One benchmark query: a unit vector, the tenant (index into [`Dataset::tenants`]) that
/// asks it, and whether it was drawn off the tenant's topics.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub tenant: usize,
    pub vector: Vec<f32>,
    pub off_topic: bool,
}

/// A true neighbour: row `index` of the tenant, its chunk, and its exact score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub index: usize,
    pub chunk: ChunkId,
    pub score: f32,
}

/// Scores that differ by less than this are ties: f32 kernels and the f64 truth may
/// order them either way, and either order is a correct answer.
pub const TIE_TOLERANCE: f64 = 1e-5;

/// The exact top `k` of `tenant` for `query` (scores in f64), best first.
#[must_use]
pub fn brute_force_top_k(tenant: &TenantData, query: &[f32], k: usize) -> Vec<Neighbor> {
    let mut scored = score_all(tenant, query);
    take_best(&mut scored, k);
    scored
        .into_iter()
        .map(|(score, index)| Neighbor {
            index,
            chunk: tenant.chunks[index],
            score: score as f32,
        })
        .collect()
}

fn score_all(tenant: &TenantData, query: &[f32]) -> Vec<(f64, usize)> {
    (0..tenant.len())
        .map(|i| {
            let v = tenant.vector(i);
            let s: f64 = v
                .iter()
                .zip(query)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            (s, i)
        })
        .collect()
}

/// Keeps the best `k` of `scored`, best first.
fn take_best(scored: &mut Vec<(f64, usize)>, k: usize) {
    let by_score = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if scored.len() > k && k > 0 {
        scored.select_nth_unstable_by(k - 1, by_score);
    }
    scored.truncate(k);
    scored.sort_unstable_by(by_score);
}

/// The exact answers to every query of a data set.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    pub k: usize,
    /// Per query, its tenant's top `k` (fewer if the tenant is smaller), best first.
    pub neighbors: Vec<Vec<Neighbor>>,
    /// Per query, every chunk within [`TIE_TOLERANCE`] of the k-th score or above it.
    acceptable: Vec<HashSet<ChunkId>>,
}

impl GroundTruth {
    /// recall@k of `returned` (best first) for query `query`: the share of the true top k
    /// it contains, a chunk tied with the k-th counting as found. 1.0 when the tenant has
    /// no vectors.
    #[must_use]
    pub fn recall(&self, query: usize, returned: &[ChunkId]) -> f64 {
        let expected = self.neighbors[query].len();
        if expected == 0 {
            return 1.0;
        }
        let acceptable = &self.acceptable[query];
        let found = returned
            .iter()
            .take(self.k)
            .filter(|c| acceptable.contains(c))
            .count();
        found.min(expected) as f64 / expected as f64
    }
}

/// Exact per-tenant top `k` of every query, on all available cores.
#[must_use]
pub fn ground_truth(dataset: &Dataset, k: usize) -> GroundTruth {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .max(1);
    let per_thread = dataset.queries.len().div_ceil(threads).max(1);
    let parts: Vec<Vec<(Vec<Neighbor>, HashSet<ChunkId>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = dataset
            .queries
            .chunks(per_thread)
            .map(|queries| {
                scope.spawn(move || {
                    queries
                        .iter()
                        .map(|q| truth_of(dataset, q, k))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // A panicking worker re-panics here, which is what a benchmark tool should do.
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let (neighbors, acceptable) = parts.into_iter().flatten().unzip();
    GroundTruth {
        k,
        neighbors,
        acceptable,
    }
}

fn truth_of(dataset: &Dataset, query: &Query, k: usize) -> (Vec<Neighbor>, HashSet<ChunkId>) {
    let tenant = &dataset.tenants[query.tenant];
    let mut scored = score_all(tenant, &query.vector);
    // A few past k, to find ties with the k-th.
    take_best(&mut scored, k + 16);
    let kth = scored
        .get(k.saturating_sub(1).min(scored.len().saturating_sub(1)))
        .map_or(f64::MIN, |s| s.0);
    let acceptable = scored
        .iter()
        .filter(|(s, _)| *s >= kth - TIE_TOLERANCE)
        .map(|(_, i)| tenant.chunks[*i])
        .collect();
    scored.truncate(k);
    let neighbors = scored
        .into_iter()
        .map(|(score, index)| Neighbor {
            index,
            chunk: tenant.chunks[index],
            score: score as f32,
        })
        .collect();
    (neighbors, acceptable)
}

/// Zipf shares of `total` over `tenants`, each at least 1, summing to `total`, largest
/// first.
fn zipf_sizes(total: usize, tenants: usize, exponent: f64) -> Vec<usize> {
    let tenants = tenants.min(total);
    if tenants == 0 {
        return Vec::new();
    }
    let weights: Vec<f64> = (1..=tenants).map(|i| (i as f64).powf(-exponent)).collect();
    let sum: f64 = weights.iter().sum();
    // Rounded shares are non-negative and at most `total`, so the cast is exact.
    let mut sizes: Vec<usize> = weights
        .iter()
        .map(|w| ((total as f64 * w / sum).round() as usize).max(1))
        .collect();
    let assigned: usize = sizes.iter().sum();
    // Rounding leaves a small surplus or deficit: settle it on the largest tenant(s).
    if assigned < total {
        sizes[0] += total - assigned;
    } else {
        let mut surplus = assigned - total;
        for size in &mut sizes {
            let cut = surplus.min(size.saturating_sub(1));
            *size -= cut;
            surplus -= cut;
        }
    }
    sizes
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        v.iter_mut()
            .for_each(|x| *x = (f64::from(*x) / norm) as f32);
    }
    v
}

/// SplitMix64 stream plus the few distributions the generator needs.
struct Rng {
    state: u64,
    spare_normal: Option<f64>,
}

impl Rng {
    fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare_normal: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // `split_mix` adds the golden-ratio increment before mixing, so this is the
        // textbook SplitMix64 sequence.
        let out = split_mix(self.state);
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        out
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0); the modulo bias is below 2⁻⁴⁰ for any n we use.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Standard normal, by Box–Muller (two per draw of two uniforms).
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare_normal = Some(r * s);
        r * c
    }

    /// A uniformly random direction.
    fn unit(&mut self, dim: usize) -> Vec<f32> {
        normalized((0..dim).map(|_| self.normal() as f32).collect())
    }

    /// `centroid` plus Gaussian noise of norm ≈ `noise`, renormalised.
    fn around(&mut self, centroid: &[f32], noise: f32) -> Vec<f32> {
        let sigma = f64::from(noise) / (centroid.len() as f64).sqrt();
        normalized(
            centroid
                .iter()
                .map(|&c| (f64::from(c) + sigma * self.normal()) as f32)
                .collect(),
        )
    }

    fn uuid(&mut self) -> uuid::Uuid {
        let bytes = (u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())).to_le_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 3's shape, scaled down so the tests stay fast unoptimised.
    fn small(seed: u64, vectors: usize, tenants: usize, queries: usize) -> Dataset {
        let mut config = SynthConfig::new(seed, vectors, tenants);
        config.dimension = 24;
        config.queries = queries;
        config.generate()
    }

    #[test]
    fn the_same_seed_gives_the_same_data() {
        let a = small(1, 2_000, 20, 50);
        let b = small(1, 2_000, 20, 50);
        assert_eq!(a.tenants[3].vectors, b.tenants[3].vectors);
        assert_eq!(a.tenants[3].chunks, b.tenants[3].chunks);
        assert_eq!(a.queries, b.queries);
        assert_ne!(
            small(2, 2_000, 20, 50).tenants[0].vectors,
            a.tenants[0].vectors
        );
    }

    #[test]
    fn issue_3_shape_has_zipf_sizes_with_a_largest_tenant_near_25k() {
        let sizes = zipf_sizes(200_000, 1_000, 1.0);
        assert_eq!(sizes.iter().sum::<usize>(), 200_000);
        assert_eq!(sizes.len(), 1_000);
        assert!((24_000..28_000).contains(&sizes[0]), "{}", sizes[0]);
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
        assert!(sizes.iter().all(|&s| s >= 1));
    }

    #[test]
    fn vectors_are_unit_length_and_a_tenth_of_queries_are_off_topic() {
        let data = small(5, 5_000, 10, 2_000);
        assert_eq!(data.total_vectors(), 5_000);
        for i in (0..data.tenants[0].len()).step_by(97) {
            let norm: f32 = data.tenants[0].vector(i).iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-4);
        }
        let off = data.queries.iter().filter(|q| q.off_topic).count();
        assert!((120..280).contains(&off), "{off} of 2000");
    }

    #[test]
    fn ground_truth_is_the_exact_top_k_and_scores_itself_perfectly() {
        let data = small(8, 3_000, 5, 40);
        let truth = ground_truth(&data, 10);
        assert_eq!(truth.neighbors.len(), data.queries.len());
        for (qi, query) in data.queries.iter().enumerate() {
            let expected = brute_force_top_k(&data.tenants[query.tenant], &query.vector, 10);
            assert_eq!(truth.neighbors[qi], expected);
            let chunks: Vec<ChunkId> = expected.iter().map(|n| n.chunk).collect();
            assert!((truth.recall(qi, &chunks) - 1.0).abs() < f64::EPSILON);
            assert!((truth.recall(qi, &chunks[..5]) - 0.5).abs() < f64::EPSILON);
        }
    }
}
