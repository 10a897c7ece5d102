//! Tells every running Trellis when a tenant's token budgets change.
//!
//! Every answer checks the tenant's budgets before the model is called. The Postgres
//! adapter keeps each tenant's budgets (not what has been used: that is summed on every
//! check) in process and drops them when this trigger sends `tenant_id/tenant_id` on
//! the channel `trellis_quota_changed`, after an insert, update or delete commits
//! (through migration 000011's trigger function).

use sea_orm_migration::prelude::*;

const UP: &str = r#"
CREATE TRIGGER tenant_quotas_notify_changed
    AFTER INSERT OR UPDATE OR DELETE ON tenant_quotas
    FOR EACH ROW EXECUTE FUNCTION trellis_notify_tenant_setting_changed('trellis_quota_changed');
"#;

const DOWN: &str = r#"
DROP TRIGGER IF EXISTS tenant_quotas_notify_changed ON tenant_quotas;
"#;

sql_migration!();
