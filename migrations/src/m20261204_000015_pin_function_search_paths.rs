//! Every Trellis function resolves table and function names through a fixed search path.
//!
//! The trigger and helper functions (`trellis_*`) name their tables unqualified and run
//! with the caller's `search_path`, in which `pg_temp` comes first for tables unless it
//! is listed. The app role cannot create anything in the schema, but any session may
//! create temporary tables, and a temporary `usage_days` or `vector_generations` would
//! then receive what the function meant for ours. Each function now carries the search
//! path it resolves through today (the existing schemas of the migrating session's path)
//! with `pg_temp` last. A function-level `SET` only scopes that one setting: the
//! functions' own `set_config(…, true)` of `trellis.*` settings still outlive the call.

use sea_orm_migration::prelude::*;

const UP: &str = r#"
DO $$
DECLARE
    path text;
    f regprocedure;
BEGIN
    SELECT coalesce(string_agg(quote_ident(s), ', '), quote_ident(current_schema())) || ', pg_temp'
      INTO path
      FROM unnest(current_schemas(false)) AS s;
    FOR f IN SELECT p.oid::regprocedure
               FROM pg_proc AS p
              WHERE p.pronamespace = current_schema()::regnamespace
                AND p.proname LIKE 'trellis\_%'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %s', f, path);
    END LOOP;
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
