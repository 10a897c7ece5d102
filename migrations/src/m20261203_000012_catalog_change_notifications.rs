//! Tells every running Trellis when what a tenant may choose from the model catalogue
//! changes: the tenant's row (its configuration names the allowed providers) or the
//! platform-wide `llm_models` table.
//!
//! Every answer looks its model up in the catalogue. The Postgres adapter keeps each
//! tenant's view of it in process and drops it when this trigger says so, on the
//! channel `trellis_catalog_changed`: `tenant_id/tenant_id` when a tenant row is
//! updated or deleted, `*` (everyone's view) when any catalogue row changes.

use sea_orm_migration::prelude::*;

const UP: &str = r#"
CREATE FUNCTION trellis_notify_tenant_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trellis_catalog_changed', OLD.id::text || '/' || OLD.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER tenants_notify_catalog_changed AFTER UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION trellis_notify_tenant_catalog_changed();

CREATE FUNCTION trellis_notify_llm_models_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trellis_catalog_changed', '*');
    RETURN NULL;
END
$$;
CREATE TRIGGER llm_models_notify_catalog_changed AFTER INSERT OR UPDATE OR DELETE ON llm_models
    FOR EACH STATEMENT EXECUTE FUNCTION trellis_notify_llm_models_changed();
"#;

const DOWN: &str = r#"
DROP TRIGGER IF EXISTS llm_models_notify_catalog_changed ON llm_models;
DROP FUNCTION IF EXISTS trellis_notify_llm_models_changed();
DROP TRIGGER IF EXISTS tenants_notify_catalog_changed ON tenants;
DROP FUNCTION IF EXISTS trellis_notify_tenant_catalog_changed();
"#;

sql_migration!();
