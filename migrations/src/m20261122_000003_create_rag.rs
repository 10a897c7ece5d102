//! Retrieval: knowledge collections, their documents, the documents' chunks with
//! embeddings (pgvector) and full-text vectors, connector sync runs, and the durable
//! job queue that ingests documents. Every table is keyed and isolated by tenant.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
-- pgvector is not a trusted extension, so only a superuser can create it; provisioning
-- (`cargo xtask db`) does, as the superuser. When it exists already, IF NOT EXISTS returns
-- before any privilege check, so the schema owner can run this; when it does not, the
-- error names the missing extension rather than failing later on an unknown type.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE knowledge_collections (
    tenant_id            uuid        NOT NULL
                                     CONSTRAINT knowledge_collections_tenant_id_fkey REFERENCES tenants (id),
    id                   uuid        NOT NULL,
    name                 text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description          text        CHECK (char_length(description) <= 2000),
    -- No foreign key yet: agents arrive with the content domain, whose migration adds
    -- FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) and its index.
    agent_id             uuid,
    source_type          text        NOT NULL
                                     CHECK (source_type IN ('manual', 'upload', 'shopify', 'wordpress')),
    chunk_max_tokens     integer     NOT NULL CHECK (chunk_max_tokens BETWEEN 16 AND 2048),
    chunk_overlap_tokens integer     NOT NULL
                                     CHECK (chunk_overlap_tokens >= 0 AND chunk_overlap_tokens * 2 < chunk_max_tokens),
    -- The model every chunk of the collection is embedded with; chunks store vectors of
    -- exactly this dimension (the chunk insert copies it into chunks.embedding_dim).
    embedding_model      text        NOT NULL CHECK (char_length(embedding_model) BETWEEN 1 AND 100),
    embedding_dimension  integer     NOT NULL CHECK (embedding_dimension BETWEEN 1 AND 4096),
    -- No foreign key: a guest member acts in this tenant while their user row lives in
    -- their home tenant (see refresh_tokens.user_id), so the creator is not always here.
    created_by           uuid,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT knowledge_collections_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT knowledge_collections_tenant_id_name_key UNIQUE (tenant_id, name)
);

ALTER TABLE knowledge_collections ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge_collections FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON knowledge_collections
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

CREATE TABLE documents (
    tenant_id     uuid        NOT NULL CONSTRAINT documents_tenant_id_fkey REFERENCES tenants (id),
    id            uuid        NOT NULL,
    collection_id uuid        NOT NULL,
    filename      text        NOT NULL CHECK (char_length(filename) BETWEEN 1 AND 255),
    original_name text        NOT NULL CHECK (char_length(original_name) BETWEEN 1 AND 255),
    mime_type     text        NOT NULL CHECK (char_length(mime_type) BETWEEN 1 AND 255),
    size_bytes    bigint      NOT NULL CHECK (size_bytes >= 0),
    -- Hex SHA-256 of the bytes.
    checksum      text        NOT NULL CHECK (char_length(checksum) BETWEEN 1 AND 128),
    storage_key   text        NOT NULL CHECK (char_length(storage_key) BETWEEN 1 AND 1024),
    status        text        NOT NULL DEFAULT 'uploaded'
                              CHECK (status IN ('uploaded', 'processing', 'processed', 'error')),
    error         text,
    processed_at  timestamptz,
    source_type   text        NOT NULL
                              CHECK (source_type IN ('manual', 'upload', 'shopify', 'wordpress')),
    source_id     text,
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    chunk_count   integer     NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    -- No foreign key, for the same reason as knowledge_collections.created_by.
    uploaded_by   uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT documents_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT documents_collection_fkey FOREIGN KEY (tenant_id, collection_id)
        REFERENCES knowledge_collections (tenant_id, id) ON DELETE CASCADE,
    -- The same bytes uploaded twice into a collection are one document, so re-uploads
    -- can never duplicate its chunks (a racing second insert gets a conflict).
    CONSTRAINT documents_checksum_key UNIQUE (tenant_id, collection_id, checksum),
    -- Redundant with the primary key as a uniqueness rule; it exists so chunks can point
    -- at (collection, document) together and never disagree with their document about
    -- the collection. It also serves listing a collection's documents in id order.
    CONSTRAINT documents_collection_id_id_key UNIQUE (tenant_id, collection_id, id)
);

ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON documents
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

CREATE TABLE chunks (
    tenant_id     uuid        NOT NULL CONSTRAINT chunks_tenant_id_fkey REFERENCES tenants (id),
    id            uuid        NOT NULL,
    document_id   uuid        NOT NULL,
    collection_id uuid        NOT NULL,
    position      integer     NOT NULL CHECK (position >= 0),
    content       text        NOT NULL,
    -- Byte offsets into the document's extracted text, for citations.
    start_offset  integer     NOT NULL CHECK (start_offset >= 0),
    end_offset    integer     NOT NULL CHECK (end_offset >= start_offset),
    page          integer     CHECK (page >= 1),
    section       text,
    token_count   integer     NOT NULL CHECK (token_count >= 0),
    -- Copied from the document, so search filters need no join.
    source_type   text        NOT NULL
                              CHECK (source_type IN ('manual', 'upload', 'shopify', 'wordpress')),
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    -- No fixed dimension: collections use different models. HNSW needs one dimension
    -- per index, so each supported dimension gets a partial expression index below,
    -- selected by embedding_dim.
    embedding     vector      NOT NULL,
    embedding_dim integer     NOT NULL,
    -- 'simple' (lower-casing, no stemming, no stop words) rather than 'english': tenants
    -- write in many languages, and English stemming and stop words would mangle the
    -- rest. Meaning is the embedding's job; full text is for exact words such as names,
    -- product codes and error messages, which 'simple' keeps intact.
    tsv           tsvector    GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chunks_pkey PRIMARY KEY (tenant_id, id),
    -- Through (collection, document) together, so a chunk's collection is its
    -- document's (see documents_collection_id_id_key).
    CONSTRAINT chunks_document_fkey FOREIGN KEY (tenant_id, collection_id, document_id)
        REFERENCES documents (tenant_id, collection_id, id) ON DELETE CASCADE,
    CONSTRAINT chunks_collection_fkey FOREIGN KEY (tenant_id, collection_id)
        REFERENCES knowledge_collections (tenant_id, id) ON DELETE CASCADE,
    -- The adapter writes the collection's dimension here, so a vector of another
    -- model's size is refused by the database, not stored where no search finds it.
    CONSTRAINT chunks_embedding_dim_check CHECK (vector_dims(embedding) = embedding_dim)
);

-- A document's chunks in order; also the index of chunks_document_fkey.
CREATE INDEX chunks_document_idx ON chunks (tenant_id, document_id, collection_id, position);
-- The index of chunks_collection_fkey, and an index-only count of a tenant's candidate
-- rows per collection and dimension, which decides between exact and HNSW search.
CREATE INDEX chunks_collection_idx ON chunks (tenant_id, collection_id, embedding_dim);
CREATE INDEX chunks_tsv_idx ON chunks USING gin (tsv);

-- HNSW over cosine distance, one partial expression index per supported dimension:
-- 384 (all-MiniLM-L6-v2, the local model) and 1536 (OpenAI text-embedding-3-small and
-- ada-002). A query uses one only if it repeats both the expression and the predicate:
--   WHERE embedding_dim = 384 ... ORDER BY embedding::vector(384) <=> $1::vector(384)
-- To support another dimension N (≤ 2000, pgvector's HNSW limit for vector), add a
-- migration with
--   CREATE INDEX CONCURRENTLY chunks_embedding_N_hnsw ON chunks
--       USING hnsw ((embedding::vector(N)) vector_cosine_ops) WHERE embedding_dim = N;
-- and add N to INDEXED_DIMENSIONS in the Postgres adapter (crates/adapters/postgres/
-- src/repo/rag_search.rs). Dimensions without an index are always searched exactly.
CREATE INDEX chunks_embedding_384_hnsw ON chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE embedding_dim = 384;
CREATE INDEX chunks_embedding_1536_hnsw ON chunks
    USING hnsw ((embedding::vector(1536)) vector_cosine_ops) WHERE embedding_dim = 1536;

ALTER TABLE chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON chunks
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- One run of a connector (Shopify, WordPress) syncing items into a collection.
CREATE TABLE sync_runs (
    tenant_id     uuid        NOT NULL CONSTRAINT sync_runs_tenant_id_fkey REFERENCES tenants (id),
    id            uuid        NOT NULL,
    collection_id uuid        NOT NULL,
    sync_type     text        NOT NULL CHECK (char_length(sync_type) BETWEEN 1 AND 50),
    status        text        NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'in_progress', 'completed', 'failed')),
    items_synced  integer     NOT NULL DEFAULT 0 CHECK (items_synced >= 0),
    error         text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    CONSTRAINT sync_runs_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT sync_runs_collection_fkey FOREIGN KEY (tenant_id, collection_id)
        REFERENCES knowledge_collections (tenant_id, id) ON DELETE CASCADE
);

-- The index of sync_runs_collection_fkey, newest runs first.
CREATE INDEX sync_runs_collection_idx ON sync_runs (tenant_id, collection_id, started_at DESC);

ALTER TABLE sync_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sync_runs
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- Durable background jobs. A worker claims the oldest due job with
-- FOR UPDATE SKIP LOCKED and leases it until lease_until; a worker that dies simply
-- lets the lease run out, and the job is claimable again.
CREATE TABLE jobs (
    tenant_id   uuid        NOT NULL CONSTRAINT jobs_tenant_id_fkey REFERENCES tenants (id),
    id          uuid        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('process_document')),
    -- What the job works on, e.g. {"document_id": "..."}. No foreign key: a job whose
    -- document was deleted meanwhile completes as a no-op.
    payload     jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    status      text        NOT NULL DEFAULT 'queued'
                            CHECK (status IN ('queued', 'running', 'done', 'failed')),
    -- Claims so far; the claim that hands a job out increments it. The maximum is the
    -- service's policy, not the queue's.
    attempts    integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When the job is due (retries are scheduled into the future).
    run_at      timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT jobs_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT jobs_lease_only_while_running CHECK ((status = 'running') = (lease_until IS NOT NULL))
);

-- Claiming looks for queued jobs by due time and running ones by lease; finished jobs
-- stay out of the index, so it does not grow with history.
CREATE INDEX jobs_claim_idx ON jobs (status, run_at) WHERE status IN ('queued', 'running');

-- Tenant transactions see their own jobs (enqueue, and complete/retry/fail, which run
-- in the job's tenant). Claiming must look across tenants: the worker does not know
-- whose job is next. It switches on trellis.worker for that one transaction (set with
-- is_local, so it ends with it), exactly as platform work switches on trellis.platform.
-- No other policy mentions trellis.worker, so worker mode opens this table only: a
-- worker sees which documents are queued, never a document or a chunk, and processes
-- each job in a transaction scoped to the job's tenant.
ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_or_worker ON jobs
    USING (
        tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid
        OR current_setting('trellis.worker', true) = 'on'
    )
    WITH CHECK (
        tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid
        OR current_setting('trellis.worker', true) = 'on'
    );
"#;

// The extension stays: provisioning created it, not this migration.
const DOWN: &str = r#"
DROP TABLE IF EXISTS jobs;
DROP TABLE IF EXISTS sync_runs;
DROP TABLE IF EXISTS chunks;
DROP TABLE IF EXISTS documents;
DROP TABLE IF EXISTS knowledge_collections;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
