//! Changing a collection's embedding model without a search outage: the target model
//! and the change's state on the collection, and a shadow table of target-model vectors
//! that fills in the background and is swapped into `chunks` in one transaction.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
ALTER TABLE knowledge_collections
    ADD COLUMN next_embedding_model     text    CHECK (char_length(next_embedding_model) BETWEEN 1 AND 100),
    ADD COLUMN next_embedding_dimension integer CHECK (next_embedding_dimension BETWEEN 1 AND 4096),
    ADD COLUMN model_change_status      text    CHECK (model_change_status IN ('running', 'failed')),
    ADD COLUMN model_change_error       text    CHECK (char_length(model_change_error) <= 4000),
    ADD COLUMN model_change_started_at  timestamptz,
    -- A change is all of these or none of them.
    ADD CONSTRAINT knowledge_collections_model_change_check CHECK (
        (next_embedding_model IS NULL) = (next_embedding_dimension IS NULL)
        AND (next_embedding_model IS NULL) = (model_change_status IS NULL)
        AND (next_embedding_model IS NULL) = (model_change_started_at IS NULL));

-- The shadow index: one target-model vector per chunk while a change runs. Search never
-- reads it; the switch copies it into chunks.embedding and empties it. Deleting a chunk
-- (a document re-processed or deleted) deletes its shadow vector with it.
CREATE TABLE chunk_embeddings_next (
    tenant_id     uuid    NOT NULL CONSTRAINT chunk_embeddings_next_tenant_id_fkey REFERENCES tenants (id),
    chunk_id      uuid    NOT NULL,
    collection_id uuid    NOT NULL,
    embedding     vector  NOT NULL,
    embedding_dim integer NOT NULL,
    CONSTRAINT chunk_embeddings_next_pkey PRIMARY KEY (tenant_id, chunk_id),
    CONSTRAINT chunk_embeddings_next_chunk_fkey FOREIGN KEY (tenant_id, chunk_id)
        REFERENCES chunks (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT chunk_embeddings_next_collection_fkey FOREIGN KEY (tenant_id, collection_id)
        REFERENCES knowledge_collections (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT chunk_embeddings_next_embedding_dim_check CHECK (vector_dims(embedding) = embedding_dim)
);

-- The index of chunk_embeddings_next_collection_fkey; also counts progress.
CREATE INDEX chunk_embeddings_next_collection_idx ON chunk_embeddings_next (tenant_id, collection_id);

ALTER TABLE chunk_embeddings_next ENABLE ROW LEVEL SECURITY;
ALTER TABLE chunk_embeddings_next FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON chunk_embeddings_next
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('process_document', 'change_model'));
"#;

const DOWN: &str = r#"
DELETE FROM jobs WHERE kind = 'change_model';
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('process_document'));
DROP TABLE IF EXISTS chunk_embeddings_next;
ALTER TABLE knowledge_collections
    DROP CONSTRAINT knowledge_collections_model_change_check,
    DROP COLUMN next_embedding_model,
    DROP COLUMN next_embedding_dimension,
    DROP COLUMN model_change_status,
    DROP COLUMN model_change_error,
    DROP COLUMN model_change_started_at;
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
