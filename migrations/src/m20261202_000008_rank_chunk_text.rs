//! Full-text ranking of given chunks in one round trip.
//!
//! Under row-level security the GIN index on `chunks.tsv` cannot be used (`@@` is not
//! leakproof), so a text search reads every row of the tenant. The Postgres adapter's
//! in-process replica therefore works out which of a tenant's chunks can match a query
//! (from the lexemes Postgres itself produced), and asks Postgres to confirm and rank only
//! those, by primary key. This function does that confirm-and-rank with the same
//! `websearch_to_tsquery('simple', …)` / `ts_rank_cd` as the direct search, so the answer
//! is the same; it scopes itself to the tenant like a unit of work (row-level security
//! applies) and puts the caller's scope back, as `trellis_vector_generation_of` does.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
-- Empty arrays and a NULL metadata document mean "no filter".
CREATE FUNCTION trellis_rank_chunk_text(
    p_tenant uuid, p_ids uuid[], p_query text, p_collections uuid[], p_source_types text[],
    p_metadata jsonb, p_limit integer)
RETURNS TABLE (chunk_id uuid, rank real)
LANGUAGE plpgsql AS $$
DECLARE
    previous text := current_setting('trellis.tenant_id', true);
    tq tsquery := websearch_to_tsquery('simple', p_query);
BEGIN
    PERFORM set_config('trellis.tenant_id', p_tenant::text, true);
    RETURN QUERY
        SELECT c.id, ts_rank_cd(c.tsv, tq)
          FROM chunks AS c
         WHERE c.tenant_id = p_tenant
           AND c.id = ANY(p_ids)
           AND c.tsv @@ tq
           AND (cardinality(p_collections) = 0 OR c.collection_id = ANY(p_collections))
           AND (cardinality(p_source_types) = 0 OR c.source_type = ANY(p_source_types))
           AND (p_metadata IS NULL OR c.metadata @> p_metadata)
         ORDER BY 2 DESC, 1
         LIMIT p_limit;
    PERFORM set_config('trellis.tenant_id', coalesce(previous, ''), true);
END
$$;
"#;

const DOWN: &str = r#"
DROP FUNCTION IF EXISTS trellis_rank_chunk_text(uuid, uuid[], text, uuid[], text[], jsonb, integer);
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
