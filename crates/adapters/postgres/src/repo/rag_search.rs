//! `VectorIndex` and `TextIndex` on Postgres.
//!
//! Vector search must return the tenant's true top k, which a plain HNSW scan with
//! `WHERE tenant_id = …` does not: the index hands out the `ef_search` nearest rows of
//! *all* tenants and the filter then drops the foreign ones, so a small tenant gets
//! fewer than k rows, often none. So each query first counts the tenant's candidate
//! rows (its rows of the query's dimension in the searched collections; an index-only
//! scan that stops at [`EXACT_SCAN_MAX_ROWS`] + 1):
//!
//! - up to [`EXACT_SCAN_MAX_ROWS`]: an **exact scan** of those rows, written so that no
//!   HNSW index matches it (the distance is taken on the uncast column, while the
//!   indexes are on `embedding::vector(N)`). Recall is 1 by construction.
//! - above: **HNSW with pgvector 0.8 iterative scans** (`hnsw.iterative_scan =
//!   relaxed_order`), which keeps walking the graph until enough rows pass the filters,
//!   then a re-sort by exact distance (relaxed order may be slightly out of order). If
//!   that still comes up short of k (very selective filters exhaust
//!   `hnsw.max_scan_tuples`), the exact scan runs instead.
//!
//! Full-text search ranks `websearch_to_tsquery('simple', …)` matches with `ts_rank_cd`.

use super::rag_common::{array_literal, db, without_nul};
use crate::rag_mapper;
use crate::store::PgStore;
use crate::txn::Txn;
use async_trait::async_trait;
use sea_orm::prelude::PgVector;
use sea_orm::{ConnectionTrait as _, DbBackend, Statement, Value};
use trellis_kernel::{TenantCtx, TenantId};
use trellis_rag::index::{ChunkId, Embedding};
use trellis_rag::{Result, Scored, SearchFilter, TextIndex, VectorIndex};

/// Tenants (or filtered slices of one) with at most this many candidate rows are
/// searched exactly. The benchmark target is recall@10 = 1.0 for tenants up to 20 000
/// vectors, which only an exact scan guarantees; it is also the in-process index's
/// `exact_max`, so both adapters draw the line in the same place. Measured on a busy
/// two-core machine with 384 dimensions: an exact scan of a 21 000-row tenant takes
/// about 45 ms, HNSW about 1.5 ms, and the bounded count that decides about 2.5 ms
/// (index-only; microseconds for small tenants). A lower line would be faster but
/// could lose rows of tenants the target promises exact answers; a higher one only
/// slower.
pub(crate) const EXACT_SCAN_MAX_ROWS: i64 = 20_000;

/// Dimensions with an HNSW index (`chunks_embedding_<N>_hnsw` in migration
/// `m20261122_000003_create_rag`). Other dimensions are always scanned exactly: adding
/// one here without its index would only make the planner fall back to a sort.
pub(crate) const INDEXED_DIMENSIONS: [usize; 2] = [384, 1536];

/// How far an iterative HNSW scan may walk before it gives up (pgvector's default is
/// 20 000). Generous, because giving up means paying for an exact scan on top.
const MAX_SCAN_TUPLES: u32 = 100_000;

/// pgvector refuses `hnsw.ef_search` above this.
const MAX_EF_SEARCH: usize = 1_000;

/// How a query is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    Exact,
    Hnsw { ef_search: usize },
}

/// The strategy for `candidates` rows (counted up to `EXACT_SCAN_MAX_ROWS + 1`) of
/// `dimension`, wanting `k` results.
pub(crate) fn strategy(candidates: i64, dimension: usize, k: usize) -> Strategy {
    if candidates <= EXACT_SCAN_MAX_ROWS || !INDEXED_DIMENSIONS.contains(&dimension) {
        return Strategy::Exact;
    }
    // Twice k candidates (at least pgvector's recommended 100) before the filters, so
    // the re-sort has a margin over relaxed ordering. The scan also hands out that many
    // matching rows before the re-sort: with a filter passing a quarter of the rows,
    // keeping only 2k of them measured recall@10 0.73–0.89; 50 or more, 1.0.
    Strategy::Hnsw {
        ef_search: (2 * k).clamp(100, MAX_EF_SEARCH),
    }
}

/// A statement under construction: SQL text plus its positional parameters.
#[derive(Default)]
struct Sql {
    values: Vec<Value>,
}

impl Sql {
    /// Adds a parameter and returns its placeholder (`$n`).
    fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        format!("${}", self.values.len())
    }

    fn statement(self, sql: String) -> Statement {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, self.values)
    }
}

/// The `WHERE` clause selecting the tenant's searchable rows of `dimension`: always
/// the tenant and the dimension and the collections; the source types and metadata
/// only `with_attributes` (the count leaves them out to stay index-only).
///
/// The dimension is written as a literal, not bound: a partial index
/// (`WHERE embedding_dim = 384`) is only usable when the planner can see the value.
fn candidates(
    sql: &mut Sql,
    tenant: TenantId,
    dimension: usize,
    filter: &SearchFilter,
    with_attributes: bool,
) -> String {
    let mut clause = format!(
        "tenant_id = {} AND embedding_dim = {dimension}",
        sql.bind(tenant.as_uuid())
    );
    if !filter.collections.is_empty() {
        let ids = array_literal(filter.collections.iter().map(|c| c.as_uuid()));
        clause.push_str(&format!(
            " AND collection_id = ANY({}::uuid[])",
            sql.bind(ids)
        ));
    }
    if with_attributes {
        text_filters(sql, filter, &mut clause);
    }
    clause
}

/// Appends the source-type and metadata filters both kinds of search share.
fn text_filters(sql: &mut Sql, filter: &SearchFilter, clause: &mut String) {
    if !filter.source_types.is_empty() {
        let types = array_literal(filter.source_types.iter().map(|t| t.as_str()));
        clause.push_str(&format!(
            " AND source_type = ANY({}::text[])",
            sql.bind(types)
        ));
    }
    if !filter.metadata.is_empty() {
        let wanted = rag_mapper::metadata_to_json(&filter.metadata);
        clause.push_str(&format!(" AND metadata @> {}::jsonb", sql.bind(wanted)));
    }
}

/// The tenant's candidate rows, counted up to `EXACT_SCAN_MAX_ROWS + 1` (beyond that
/// the answer is the same). Reads `chunks_collection_idx` only.
async fn count_candidates(
    txn: &Txn,
    tenant: TenantId,
    dimension: usize,
    filter: &SearchFilter,
) -> Result<i64> {
    let mut sql = Sql::default();
    let clause = candidates(&mut sql, tenant, dimension, filter, false);
    let text = format!(
        "SELECT count(*) AS n FROM (SELECT 1 FROM chunks WHERE {clause} LIMIT {}) AS c",
        EXACT_SCAN_MAX_ROWS + 1
    );
    let row = txn
        .query_one_raw(sql.statement(text))
        .await
        .map_err(db("count search candidates"))?;
    match row {
        Some(row) => row.try_get("", "n").map_err(db("count search candidates")),
        None => Ok(0),
    }
}

/// Exact nearest neighbours. `embedding <=> $q` on the uncast column matches no HNSW
/// index expression, so the planner cannot pick one and drop rows.
fn exact_query(tenant: TenantId, query: &Embedding, filter: &SearchFilter, k: i64) -> Statement {
    let mut sql = Sql::default();
    let q = sql.bind(PgVector::from(query.as_slice().to_vec()));
    let clause = candidates(&mut sql, tenant, query.dimension(), filter, true);
    let text = format!(
        "SELECT id, (embedding <=> {q}) AS distance FROM chunks WHERE {clause} \
         ORDER BY distance, id LIMIT {k}"
    );
    sql.statement(text)
}

/// Approximate nearest neighbours through the dimension's HNSW index (expression and
/// predicate repeated so the planner can match it), re-sorted exactly.
///
/// The re-sort orders by `distance + 0`: since Postgres 17 a CTE passes its sort order
/// up, so a plain `ORDER BY distance` would trust the relaxed order and skip the sort.
fn hnsw_query(
    tenant: TenantId,
    query: &Embedding,
    filter: &SearchFilter,
    k: i64,
    inner: i64,
) -> Statement {
    let n = query.dimension();
    let mut sql = Sql::default();
    let q = sql.bind(PgVector::from(query.as_slice().to_vec()));
    let clause = candidates(&mut sql, tenant, n, filter, true);
    let text = format!(
        "WITH nearest AS MATERIALIZED (
             SELECT id, embedding::vector({n}) <=> {q}::vector({n}) AS distance
               FROM chunks WHERE {clause}
              ORDER BY embedding::vector({n}) <=> {q}::vector({n})
              LIMIT {inner})
         SELECT id, distance FROM nearest ORDER BY distance + 0, id LIMIT {k}"
    );
    sql.statement(text)
}

/// Transaction-local HNSW settings (`set_config(…, true)` is `SET LOCAL` with
/// parameters), gone when the unit of work ends.
fn hnsw_settings(ef_search: usize) -> Statement {
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), \
                set_config('hnsw.ef_search', $1, true), \
                set_config('hnsw.max_scan_tuples', $2, true)",
        [
            ef_search.to_string().into(),
            MAX_SCAN_TUPLES.to_string().into(),
        ],
    )
}

async fn nearest(txn: &Txn, stmt: Statement) -> Result<Vec<Scored>> {
    let rows = txn
        .query_all_raw(stmt)
        .await
        .map_err(db("search chunk embeddings"))?;
    rows.into_iter()
        .map(|row| {
            let id: uuid::Uuid = row.try_get("", "id").map_err(db("read search hit"))?;
            let distance: f64 = row.try_get("", "distance").map_err(db("read search hit"))?;
            Ok(Scored {
                chunk: ChunkId::from_uuid(id),
                // Cosine similarity; the f32 the domain scores in is precise enough.
                #[allow(clippy::cast_possible_truncation)]
                score: (1.0 - distance) as f32,
            })
        })
        .collect()
}

#[async_trait]
impl VectorIndex for PgStore {
    async fn search(
        &self,
        ctx: &TenantCtx,
        query: &Embedding,
        filter: &SearchFilter,
        k: usize,
    ) -> Result<Vec<Scored>> {
        let Ok(limit) = i64::try_from(k) else {
            return Err(anyhow::anyhow!("k = {k} is out of range").into());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tenant = ctx.tenant_id();
        let query = query.clone();
        let filter = filter.clone();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let dimension = query.dimension();
                let rows = count_candidates(txn, tenant, dimension, &filter).await?;
                if let Strategy::Hnsw { ef_search } = strategy(rows, dimension, k) {
                    txn.execute_raw(hnsw_settings(ef_search))
                        .await
                        .map_err(db("configure the HNSW scan"))?;
                    // As many matching rows as ef_search go into the re-sort (see
                    // `strategy`), never fewer than k.
                    let inner = i64::try_from(ef_search).unwrap_or(limit).max(limit);
                    let hits =
                        nearest(txn, hnsw_query(tenant, &query, &filter, limit, inner)).await?;
                    if hits.len() == k {
                        return Ok(hits);
                    }
                }
                nearest(txn, exact_query(tenant, &query, &filter, limit)).await
            })
        })
        .await
    }
}

#[async_trait]
impl TextIndex for PgStore {
    async fn search(
        &self,
        ctx: &TenantCtx,
        query: &str,
        filter: &SearchFilter,
        k: usize,
    ) -> Result<Vec<Scored>> {
        let Ok(limit) = i64::try_from(k) else {
            return Err(anyhow::anyhow!("k = {k} is out of range").into());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tenant = ctx.tenant_id();
        let query = without_nul(query).into_owned();
        let filter = filter.clone();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let mut sql = Sql::default();
                let t = sql.bind(tenant.as_uuid());
                let q = sql.bind(query);
                let mut clause = String::new();
                if !filter.collections.is_empty() {
                    let ids = array_literal(filter.collections.iter().map(|c| c.as_uuid()));
                    clause.push_str(&format!(
                        " AND collection_id = ANY({}::uuid[])",
                        sql.bind(ids)
                    ));
                }
                text_filters(&mut sql, &filter, &mut clause);
                // websearch_to_tsquery never fails on syntax: quotes, `or` and `-` mean
                // what a search box user expects, and punctuation alone parses to an
                // empty query. `numnode(…) > 0` turns that into a one-time filter, so an
                // empty query reads nothing and returns nothing.
                let text = format!(
                    "SELECT id, ts_rank_cd(tsv, websearch_to_tsquery('simple', {q})) AS rank
                       FROM chunks
                      WHERE tenant_id = {t}
                        AND numnode(websearch_to_tsquery('simple', {q})) > 0
                        AND tsv @@ websearch_to_tsquery('simple', {q}){clause}
                      ORDER BY rank DESC, id
                      LIMIT {limit}"
                );
                let rows = txn
                    .query_all_raw(sql.statement(text))
                    .await
                    .map_err(db("search chunk text"))?;
                rows.into_iter()
                    .map(|row| {
                        let id: uuid::Uuid = row.try_get("", "id").map_err(db("read text hit"))?;
                        let rank: f32 = row.try_get("", "rank").map_err(db("read text hit"))?;
                        Ok(Scored {
                            chunk: ChunkId::from_uuid(id),
                            score: rank,
                        })
                    })
                    .collect()
            })
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use trellis_rag::SourceType;
    use trellis_rag::index::CollectionId;

    #[test]
    fn small_tenants_and_unindexed_dimensions_are_searched_exactly() {
        assert_eq!(strategy(0, 384, 10), Strategy::Exact);
        assert_eq!(strategy(EXACT_SCAN_MAX_ROWS, 384, 10), Strategy::Exact);
        assert_eq!(strategy(EXACT_SCAN_MAX_ROWS + 1, 768, 10), Strategy::Exact);
    }

    #[test]
    fn big_tenants_go_through_hnsw_with_room_for_the_re_sort() {
        let big = EXACT_SCAN_MAX_ROWS + 1;
        assert_eq!(strategy(big, 384, 10), Strategy::Hnsw { ef_search: 100 });
        assert_eq!(strategy(big, 1536, 200), Strategy::Hnsw { ef_search: 400 });
        assert_eq!(
            strategy(big, 384, 5_000),
            Strategy::Hnsw {
                ef_search: MAX_EF_SEARCH
            }
        );
    }

    #[test]
    fn every_filter_becomes_a_bound_condition_and_the_dimension_a_literal() {
        let filter = SearchFilter {
            collections: vec![CollectionId::new()],
            source_types: vec![SourceType::Upload, SourceType::Manual],
            metadata: [("lang".to_owned(), "de".to_owned())].into(),
        };
        let q = Embedding::new(vec![0.0; 383].into_iter().chain([1.0]).collect()).unwrap();
        let stmt = hnsw_query(TenantId::new(), &q, &filter, 10, 100);
        for part in [
            "embedding_dim = 384",
            "embedding::vector(384) <=> $1::vector(384)",
            "tenant_id = $2",
            "collection_id = ANY($3::uuid[])",
            "source_type = ANY($4::text[])",
            "metadata @> $5::jsonb",
            "ORDER BY distance + 0, id LIMIT 10",
        ] {
            assert!(stmt.sql.contains(part), "{part} missing from {}", stmt.sql);
        }
        assert_eq!(
            stmt.values.unwrap().0[3],
            Value::from("{upload,manual}".to_owned())
        );
        let exact = exact_query(TenantId::new(), &q, &filter, 10);
        assert!(!exact.sql.contains("::vector(384)"), "{}", exact.sql);
    }
}
