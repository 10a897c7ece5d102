//! Tells every running Trellis when a tenant's LLM configuration changes.
//!
//! Every answer reads the tenant's LLM configuration (which provider, which model, the
//! sealed API key) when it opens the model, and again when the model is the tenant's
//! own rather than one of the catalogue's. The Postgres adapter keeps it in process and
//! must drop it the moment any instance changes it: this trigger sends
//! `tenant_id/tenant_id` on the channel `trellis_tenant_llm_changed` when an insert,
//! update or delete commits. Inserts count here, unlike for users and collections: the
//! cache also remembers that a tenant has no configuration yet.
//!
//! The trigger function takes its channel as the trigger's argument, so any table of
//! per-tenant settings keyed by `tenant_id` can announce itself the same way
//! (migration 000013 does, for budgets).

use sea_orm_migration::prelude::*;

const UP: &str = r#"
CREATE FUNCTION trellis_notify_tenant_setting_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tenant text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        tenant := OLD.tenant_id::text;
    ELSE
        tenant := NEW.tenant_id::text;
    END IF;
    PERFORM pg_notify(TG_ARGV[0], tenant || '/' || tenant);
    IF TG_OP = 'UPDATE' AND OLD.tenant_id <> NEW.tenant_id THEN
        PERFORM pg_notify(TG_ARGV[0], OLD.tenant_id::text || '/' || OLD.tenant_id::text);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER tenant_llm_configs_notify_changed
    AFTER INSERT OR UPDATE OR DELETE ON tenant_llm_configs
    FOR EACH ROW EXECUTE FUNCTION trellis_notify_tenant_setting_changed('trellis_tenant_llm_changed');
"#;

const DOWN: &str = r#"
DROP TRIGGER IF EXISTS tenant_llm_configs_notify_changed ON tenant_llm_configs;
DROP FUNCTION IF EXISTS trellis_notify_tenant_setting_changed();
"#;

sql_migration!();
