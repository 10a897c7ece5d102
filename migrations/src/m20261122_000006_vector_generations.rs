//! Change tracking for in-process replicas of the tenants' vectors.
//!
//! The Postgres adapter can answer vector searches from an in-process copy of a tenant's
//! chunk vectors (the RAG domain's index: exact for small partitions, per-partition HNSW
//! for large ones), which is both faster and more accurate than one HNSW graph shared by
//! every tenant. The copy must never serve stale results, so every write to `chunks`
//! advances the tenant's *generation* here, in the writer's own transaction:
//!
//! - an insert stamps its rows with the generation (`chunks.vector_gen`), so a replica
//!   that has seen generation G fetches exactly the rows with `vector_gen > G`;
//! - a delete, or an update of a vector (a model switch), also moves `reset_gen`, which
//!   tells replicas to reload the tenant from scratch.
//!
//! The upsert takes the tenant's row lock and keeps it until commit, so generations
//! become visible in order: a replica that reads generation G has every row stamped ≤ G
//! already committed. A transaction takes one generation however many rows it writes
//! (remembered in a transaction-local setting). Writers of one tenant queue on that lock
//! only for the rest of their transaction, which the ingestion worker keeps short.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE vector_generations (
    tenant_id uuid   NOT NULL CONSTRAINT vector_generations_tenant_id_fkey REFERENCES tenants (id),
    gen       bigint NOT NULL CHECK (gen >= 0),
    reset_gen bigint NOT NULL CHECK (reset_gen >= 0 AND reset_gen <= gen),
    CONSTRAINT vector_generations_pkey PRIMARY KEY (tenant_id)
);

ALTER TABLE vector_generations ENABLE ROW LEVEL SECURITY;
ALTER TABLE vector_generations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON vector_generations
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- Rows that existed before this migration carry 0: replicas load a tenant in full the
-- first time anyway.
ALTER TABLE chunks ADD COLUMN vector_gen bigint NOT NULL DEFAULT 0;
CREATE INDEX chunks_vector_gen_idx ON chunks (tenant_id, vector_gen);

-- The generation of this transaction's writes to tenant t's chunks; with reset, also
-- marks that rows were removed or changed.
CREATE FUNCTION trellis_vector_generation(t uuid, reset boolean) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    setting text := 'trellis.vector_gen_' || replace(t::text, '-', '');
    current text := current_setting(setting, true);
    g bigint;
BEGIN
    IF current IS NULL OR current = '' THEN
        INSERT INTO vector_generations AS v (tenant_id, gen, reset_gen)
             VALUES (t, 1, CASE WHEN reset THEN 1 ELSE 0 END)
        ON CONFLICT (tenant_id) DO UPDATE
             SET gen = v.gen + 1,
                 reset_gen = CASE WHEN reset THEN v.gen + 1 ELSE v.reset_gen END
        RETURNING gen INTO g;
        PERFORM set_config(setting, g::text, true);
    ELSE
        g := current::bigint;
        IF reset THEN
            UPDATE vector_generations SET reset_gen = g WHERE tenant_id = t AND reset_gen <> g;
        END IF;
    END IF;
    RETURN g;
END
$$;

-- Tenant t's generation in one round trip, for the replica's check before every search.
-- It scopes itself like a unit of work (trellis.tenant_id set before the read, so
-- row-level security applies) and then restores the caller's scope, so calling it inside
-- another tenant's unit of work cannot widen that one. No row yet: (0, 0).
CREATE FUNCTION trellis_vector_generation_of(t uuid, OUT generation bigint, OUT reset_generation bigint)
LANGUAGE plpgsql AS $$
DECLARE
    previous text := current_setting('trellis.tenant_id', true);
BEGIN
    PERFORM set_config('trellis.tenant_id', t::text, true);
    SELECT v.gen, v.reset_gen INTO generation, reset_generation
      FROM vector_generations AS v WHERE v.tenant_id = t;
    PERFORM set_config('trellis.tenant_id', coalesce(previous, ''), true);
    generation := coalesce(generation, 0);
    reset_generation := coalesce(reset_generation, 0);
END
$$;

CREATE FUNCTION trellis_chunks_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.vector_gen := trellis_vector_generation(NEW.tenant_id, false);
    RETURN NEW;
END
$$;

CREATE FUNCTION trellis_chunks_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM trellis_vector_generation(tenant_id, true) FROM (SELECT DISTINCT tenant_id FROM changed) AS t;
    RETURN NULL;
END
$$;

CREATE TRIGGER chunks_stamp BEFORE INSERT ON chunks
    FOR EACH ROW EXECUTE FUNCTION trellis_chunks_stamp();
CREATE TRIGGER chunks_reset_on_delete AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION trellis_chunks_reset();
CREATE TRIGGER chunks_reset_on_update AFTER UPDATE ON chunks
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION trellis_chunks_reset();
"#;

const DOWN: &str = r#"
DROP TRIGGER IF EXISTS chunks_reset_on_update ON chunks;
DROP TRIGGER IF EXISTS chunks_reset_on_delete ON chunks;
DROP TRIGGER IF EXISTS chunks_stamp ON chunks;
DROP FUNCTION IF EXISTS trellis_chunks_reset();
DROP FUNCTION IF EXISTS trellis_chunks_stamp();
DROP FUNCTION IF EXISTS trellis_vector_generation_of(uuid);
DROP FUNCTION IF EXISTS trellis_vector_generation(uuid, boolean);
DROP INDEX IF EXISTS chunks_vector_gen_idx;
ALTER TABLE chunks DROP COLUMN IF EXISTS vector_gen;
DROP TABLE IF EXISTS vector_generations;
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
