//! Tells every running Trellis when a user row changes.
//!
//! `GET /v1/auth/me` is what every client polls, and it reads one user. The Postgres
//! adapter keeps users it has read in process and must drop one the moment any instance
//! changes it: this trigger sends the changed row's `tenant_id/id` on the channel
//! `trellis_user_changed` when the change commits (`NOTIFY` is transactional), whoever
//! made it — a repository, another instance, or an operator in `psql`. Inserts need no
//! notice: the cache never remembers a user it did not find.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE FUNCTION trellis_notify_user_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trellis_user_changed', OLD.tenant_id::text || '/' || OLD.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER users_notify_changed AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION trellis_notify_user_changed();
"#;

const DOWN: &str = r#"
DROP TRIGGER IF EXISTS users_notify_changed ON users;
DROP FUNCTION IF EXISTS trellis_notify_user_changed();
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
