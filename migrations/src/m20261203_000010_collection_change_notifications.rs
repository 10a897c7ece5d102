//! Tells every running Trellis when a knowledge collection row changes.
//!
//! Every grounded answer reads its agent's collections (their embedding model decides
//! how the question is embedded). The Postgres adapter keeps collections it has read in
//! process and must drop one the moment any instance changes it: this trigger sends the
//! changed row's `tenant_id/id` on the channel `trellis_collection_changed` when the
//! change commits, whoever made it — a rename, an embedding-model switch by the worker,
//! a delete, or an operator in `psql`. Inserts need no notice: the cache never
//! remembers a collection it did not find.

use sea_orm_migration::prelude::*;

const UP: &str = r#"
CREATE FUNCTION trellis_notify_collection_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trellis_collection_changed', OLD.tenant_id::text || '/' || OLD.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER knowledge_collections_notify_changed AFTER UPDATE OR DELETE ON knowledge_collections
    FOR EACH ROW EXECUTE FUNCTION trellis_notify_collection_changed();
"#;

const DOWN: &str = r#"
DROP TRIGGER IF EXISTS knowledge_collections_notify_changed ON knowledge_collections;
DROP FUNCTION IF EXISTS trellis_notify_collection_changed();
"#;

sql_migration!();
