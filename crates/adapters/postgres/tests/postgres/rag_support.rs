//! Set-up for the RAG tests: collections, documents and chunks built through the
//! ports, seeded pseudo-random vectors, brute-force answers to compare with, and the
//! big shared tenant the vector-search tests need (built once per database).

use super::support::{begin_in, owner_url, raw, stmt, stmt_with, tenant, unique_slug};
use sea_orm::ConnectionTrait;
use sea_orm::prelude::PgVector;
use trellis_kernel::{PlatformCtx, TenantCtx, TenantId};
use trellis_postgres::PgStore;
use trellis_rag::index::{ChunkId, CollectionId, Embedding};
use trellis_rag::{
    Chunk, ChunkRepo, ChunkingSettings, Collection, CollectionRepo, Document, DocumentId,
    DocumentRepo, EmbeddedChunk, EmbeddingModel, Metadata, NewCollection, NewDocument, SourceType,
    Span,
};
use trellis_tenancy::TenantRepo;

/// A small, fast pseudo-random generator (xorshift64*), seeded so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// Uniform in [-0.5, 0.5).
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        bits as f32 / (1u64 << 24) as f32 - 0.5
    }

    pub fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.next()).collect()
    }
}

pub fn unit(values: Vec<f32>) -> Embedding {
    Embedding::new(values).unwrap()
}

/// A fresh tenant for RAG tests.
pub async fn rag_tenant(store: &PgStore) -> TenantCtx {
    tenant(store).await.1
}

pub async fn collection(store: &PgStore, ctx: &TenantCtx, dim: u32) -> Collection {
    CollectionRepo::insert(
        store,
        ctx,
        NewCollection {
            id: CollectionId::new(),
            name: format!("c-{}", uuid::Uuid::now_v7().simple()),
            description: None,
            agent_id: None,
            source_type: SourceType::Upload,
            chunking: ChunkingSettings::default(),
            embedding_model: EmbeddingModel::new("test/model", dim).unwrap(),
            created_by: None,
        },
    )
    .await
    .unwrap()
}

pub fn new_document(
    collection: CollectionId,
    source: SourceType,
    metadata: Metadata,
) -> NewDocument {
    let id = DocumentId::new();
    NewDocument {
        id,
        collection_id: collection,
        filename: id.to_string(),
        original_name: "notes.md".into(),
        mime_type: "text/markdown".into(),
        size_bytes: 42,
        checksum: uuid::Uuid::now_v7().simple().to_string(),
        storage_key: format!("t/{collection}/{id}"),
        source_type: source,
        source_id: None,
        metadata,
        uploaded_by: None,
    }
}

pub async fn document(
    store: &PgStore,
    ctx: &TenantCtx,
    collection: CollectionId,
    source: SourceType,
    metadata: Metadata,
) -> Document {
    DocumentRepo::insert(store, ctx, new_document(collection, source, metadata))
        .await
        .unwrap()
}

pub fn meta(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A chunk of `doc` at `position` (copying the document's source type and metadata,
/// as the ingestion service does).
pub fn chunk(doc: &Document, position: u32, content: &str, embedding: Vec<f32>) -> EmbeddedChunk {
    EmbeddedChunk {
        chunk: Chunk {
            id: ChunkId::new(),
            document_id: doc.id,
            collection_id: doc.collection_id,
            position,
            content: content.to_owned(),
            span: Span {
                start: position * 100,
                end: position * 100 + content.len() as u32,
                page: Some(1),
                section: Some("Intro".into()),
            },
            token_count: content.split_whitespace().count() as u32,
            source_type: doc.source_type,
            metadata: doc.metadata.clone(),
        },
        embedding: unit(embedding),
    }
}

/// Stores `chunks` as the chunks of `doc`, returning them.
pub async fn store_chunks(
    store: &PgStore,
    ctx: &TenantCtx,
    doc: &Document,
    chunks: Vec<EmbeddedChunk>,
) -> Vec<EmbeddedChunk> {
    store
        .replace_for_document(ctx, doc.id, chunks.clone())
        .await
        .unwrap();
    chunks
}

/// The true top `k` of `candidates` by cosine similarity, best first.
pub fn brute_force(query: &Embedding, candidates: &[EmbeddedChunk], k: usize) -> Vec<ChunkId> {
    let mut scored: Vec<(f32, ChunkId)> = candidates
        .iter()
        .map(|c| (c.embedding.cosine(query), c.chunk.id))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(k).map(|(_, id)| id).collect()
}

/// The shared big tenant: many rows of one dimension in one collection.
pub struct BigTenant {
    pub ctx: TenantCtx,
    pub collection: CollectionId,
}

/// Rows of the big tenant: above the adapter's exact-scan threshold (20 000), so its
/// searches take the HNSW path.
pub const BIG_TENANT_ROWS: i64 = 21_000;
pub const BIG_DIM: usize = 384;

/// Fixed identities of the big tenant, so every test binary and run finds the same one.
const BIG_TENANT: uuid::Uuid = uuid::uuid!("0192f000-0000-7000-8000-00000000b16e");
const BIG_COLLECTION: uuid::Uuid = uuid::uuid!("0192f000-0000-7000-8000-00000000c011");
const BIG_DOCUMENT: uuid::Uuid = uuid::uuid!("0192f000-0000-7000-8000-00000000d0c0");
/// Session advisory lock serialising the one-time build.
const BIG_TENANT_LOCK: i64 = 0x7261_675f_6269_6721;

/// The big tenant, built on first use and kept: inserting its rows maintains the HNSW
/// index row by row, which takes minutes on two cores, far too long to repeat per
/// test. The build is one transaction, so a run killed halfway leaves nothing behind.
///
/// Its vectors are a Gaussian-like mixture around 128 random centroids (like real
/// embeddings, which cluster by topic; uniform random vectors have no near neighbours
/// and defeat every approximate index). Even rows are `upload`, odd `manual`; metadata
/// `group` is the row number modulo 4.
pub async fn big_tenant(store: &PgStore) -> BigTenant {
    let owner = raw(&owner_url()).await;
    owner
        .execute_unprepared(&format!("SELECT pg_advisory_lock({BIG_TENANT_LOCK})"))
        .await
        .unwrap();
    let tenant = TenantId::from_uuid(BIG_TENANT);
    if TenantRepo::get(store, &PlatformCtx::system(), tenant)
        .await
        .is_err()
    {
        let mut new = super::support::new_tenant(&unique_slug("rag-big"));
        new.id = tenant;
        store
            .create(&PlatformCtx::system(), new, super::support::first_admin())
            .await
            .unwrap();
    }
    let txn = begin_in(&owner, tenant).await;
    let built = txn
        .query_one_raw(stmt_with(
            "SELECT 1 AS one FROM knowledge_collections WHERE tenant_id = $1 AND id = $2",
            vec![BIG_TENANT.into(), BIG_COLLECTION.into()],
        ))
        .await
        .unwrap()
        .is_some();
    if !built {
        for sql in [
            format!(
                "INSERT INTO knowledge_collections (tenant_id, id, name, source_type,
                     chunk_max_tokens, chunk_overlap_tokens, embedding_model, embedding_dimension)
                 VALUES ('{BIG_TENANT}', '{BIG_COLLECTION}', 'big', 'upload', 200, 30,
                         'test/big', {BIG_DIM})"
            ),
            format!(
                "INSERT INTO documents (tenant_id, id, collection_id, filename, original_name,
                     mime_type, size_bytes, checksum, storage_key, source_type)
                 VALUES ('{BIG_TENANT}', '{BIG_DOCUMENT}', '{BIG_COLLECTION}', 'big', 'big.txt',
                         'text/plain', 1, 'big', 'big', 'upload')"
            ),
            format!(
                "WITH centroids AS MATERIALIZED (
                     SELECT j, array_agg(random() - 0.5 ORDER BY i) AS c
                       FROM generate_series(0, 127) AS j, generate_series(1, {BIG_DIM}) AS i
                      GROUP BY j)
                 INSERT INTO chunks (tenant_id, id, document_id, collection_id, position, content,
                     start_offset, end_offset, token_count, source_type, metadata,
                     embedding, embedding_dim)
                 SELECT '{BIG_TENANT}', uuidv7(), '{BIG_DOCUMENT}', '{BIG_COLLECTION}', g,
                        'fixture chunk ' || g, 0, 1, 3,
                        CASE WHEN g % 2 = 0 THEN 'upload' ELSE 'manual' END,
                        jsonb_build_object('group', (g % 4)::text),
                        (SELECT array_agg(c.c[i] + (random() - 0.5) * 0.5 ORDER BY i)::vector
                           FROM generate_series(1, {BIG_DIM}) AS i),
                        {BIG_DIM}
                   FROM generate_series(0, {BIG_TENANT_ROWS} - 1) AS g
                   JOIN centroids AS c ON c.j = g % 128"
            ),
        ] {
            txn.execute_unprepared(&sql).await.unwrap();
        }
    }
    txn.commit().await.unwrap();
    if !built {
        // Fresh statistics, as autovacuum would give a table that has been in use.
        owner.execute_raw(stmt("ANALYZE chunks")).await.unwrap();
    }
    owner
        .execute_unprepared(&format!("SELECT pg_advisory_unlock({BIG_TENANT_LOCK})"))
        .await
        .unwrap();
    BigTenant {
        ctx: TenantCtx::system(tenant),
        collection: CollectionId::from_uuid(BIG_COLLECTION),
    }
}

/// A stored embedding of the big tenant, by row position.
pub async fn big_tenant_vector(big: &BigTenant, position: i32) -> Vec<f32> {
    let owner = raw(&owner_url()).await;
    let txn = begin_in(&owner, big.ctx.tenant_id()).await;
    let row = txn
        .query_one_raw(stmt_with(
            "SELECT embedding AS v FROM chunks WHERE tenant_id = $1 AND collection_id = $2
              AND position = $3",
            vec![
                big.ctx.tenant_id().as_uuid().into(),
                big.collection.as_uuid().into(),
                position.into(),
            ],
        ))
        .await
        .unwrap()
        .unwrap();
    txn.commit().await.unwrap();
    row.try_get::<PgVector>("", "v").unwrap().to_vec()
}

/// The exact top `k` of the big tenant (optionally filtered), computed by the database
/// with index scans switched off: the ground truth for its HNSW searches.
pub async fn big_tenant_truth(
    big: &BigTenant,
    query: &[f32],
    extra_where: &str,
    k: i64,
) -> Vec<ChunkId> {
    let owner = raw(&owner_url()).await;
    let txn = begin_in(&owner, big.ctx.tenant_id()).await;
    txn.execute_unprepared("SET LOCAL enable_indexscan = off")
        .await
        .unwrap();
    let rows = txn
        .query_all_raw(stmt_with(
            &format!(
                "SELECT id FROM chunks WHERE tenant_id = $1 AND collection_id = $2 {extra_where}
                  ORDER BY embedding <=> $3, id LIMIT {k}"
            ),
            vec![
                big.ctx.tenant_id().as_uuid().into(),
                big.collection.as_uuid().into(),
                PgVector::from(query.to_vec()).into(),
            ],
        ))
        .await
        .unwrap();
    txn.commit().await.unwrap();
    rows.iter()
        .map(|r| ChunkId::from_uuid(r.try_get("", "id").unwrap()))
        .collect()
}

/// Cross-checks: the raw `chunks` rows a transaction scoped to `tenant` can see.
pub async fn visible_chunks(url: &str, tenant: TenantId) -> i64 {
    let db = raw(url).await;
    let txn = begin_in(&db, tenant).await;
    let rows = txn
        .query_one_raw(stmt("SELECT count(*) AS n FROM chunks"))
        .await
        .unwrap()
        .unwrap();
    txn.commit().await.unwrap();
    rows.try_get("", "n").unwrap()
}
