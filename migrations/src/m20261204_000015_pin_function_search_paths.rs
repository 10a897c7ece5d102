//! Every Trellis function resolves table and function names through a fixed search path.
//!
//! The trigger and helper functions (`trellis_*`) name their tables unqualified and run
//! with the caller's `search_path`, in which `pg_temp` comes first for tables unless it
//! is listed. The app role cannot create anything in the schema, but any session may
//! create temporary tables, and a temporary `usage_days` or `vector_generations` would
//! then receive what the function meant for ours. Each function now resolves through
//! `pg_catalog`, then the schema the migrations created it and its tables in (`public`
//! unless the migrating session's `search_path` says otherwise), then `pg_temp` last;
//! the migration fails rather than pin nothing. A
//! function-level `SET` only scopes that one setting: the functions' own
//! `set_config(…, true)` of `trellis.*` settings still outlive the call.

use sea_orm_migration::prelude::*;

const UP: &str = r#"
DO $$
DECLARE
    schema_name text := current_schema();
    f regprocedure;
    pinned integer := 0;
BEGIN
    IF schema_name IS NULL OR schema_name LIKE 'pg\_temp%' THEN
        RAISE EXCEPTION 'no schema to pin: run the migrations with the search_path the app uses';
    END IF;
    FOR f IN SELECT p.oid::regprocedure
               FROM pg_proc AS p
              WHERE p.pronamespace = quote_ident(schema_name)::regnamespace
                AND p.proname LIKE 'trellis\_%'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       f, schema_name);
        pinned := pinned + 1;
    END LOOP;
    IF pinned = 0 THEN
        RAISE EXCEPTION 'no trellis_* function in schema %: wrong search_path?', schema_name;
    END IF;
END
$$;
"#;

const DOWN: &str = r#"
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure
               FROM pg_proc AS p
              WHERE p.pronamespace = current_schema()::regnamespace
                AND p.proname LIKE 'trellis\_%'
    LOOP
        EXECUTE format('ALTER FUNCTION %s RESET search_path', f);
    END LOOP;
END
$$;
"#;

sql_migration!();
