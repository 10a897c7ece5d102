//! The tenancy rules of ARCHITECTURE §3, checked against `pg_catalog` so a new
//! migration that forgets one fails here rather than in production.

use super::support::{owner_url, query, raw};
use std::collections::{BTreeSet, HashMap};

/// Tables the migrations manage (sea-orm's bookkeeping table is not ours).
const NOT_OURS: &str = "'seaql_migrations'";

fn fail_if_any(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "schema rules broken:\n  {}",
        problems.join("\n  ")
    );
}

#[tokio::test]
async fn every_tenant_table_is_keyed_by_and_isolated_on_tenant_id() {
    let db = raw(&owner_url()).await;
    let rows = query(
        &db,
        &format!(
            "SELECT c.relname::text AS table_name,
                    c.relrowsecurity AS rls,
                    c.relforcerowsecurity AS forced,
                    a.attnotnull AS not_null,
                    format_type(a.atttypid, a.atttypmod) AS type,
                    EXISTS (SELECT 1 FROM pg_index i
                             WHERE i.indrelid = c.oid AND i.indisprimary
                               AND a.attnum = ANY (i.indkey)) AS in_pk,
                    (SELECT count(*) FROM pg_policy p
                      WHERE p.polrelid = c.oid AND p.polcmd = '*'
                        AND pg_get_expr(p.polqual, p.polrelid) LIKE '%trellis.tenant_id%'
                        AND pg_get_expr(p.polwithcheck, p.polrelid) LIKE '%trellis.tenant_id%'
                    ) AS tenant_policies
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid
                                  AND a.attname = 'tenant_id' AND NOT a.attisdropped
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                AND c.relname NOT IN ({NOT_OURS})
              ORDER BY 1"
        ),
    )
    .await;

    let mut tables = BTreeSet::new();
    let mut problems = Vec::new();
    for r in &rows {
        let table: String = r.try_get("", "table_name").unwrap();
        let get = |col: &str| r.try_get::<bool>("", col).unwrap();
        if !get("rls") || !get("forced") {
            problems.push(format!(
                "{table}: row-level security not enabled and forced"
            ));
        }
        if r.try_get::<i64>("", "tenant_policies").unwrap() == 0 {
            problems.push(format!(
                "{table}: no policy (for all commands, USING and WITH CHECK) on trellis.tenant_id"
            ));
        }
        if !get("in_pk") {
            problems.push(format!("{table}: tenant_id is not part of the primary key"));
        }
        if !get("not_null") {
            problems.push(format!("{table}: tenant_id is nullable"));
        }
        let ty: String = r.try_get("", "type").unwrap();
        if ty != "uuid" {
            problems.push(format!("{table}: tenant_id is {ty}, not uuid"));
        }
        tables.insert(table);
    }
    fail_if_any(&problems);
    // Guard against passing vacuously (e.g. the query matching nothing).
    for expected in [
        "api_keys",
        "memberships",
        "refresh_tokens",
        "tenant_llm_configs",
        "tenant_widget_configs",
        "users",
    ] {
        assert!(tables.contains(expected), "{expected} was not checked");
    }
}

#[tokio::test]
async fn tables_without_tenant_id_still_have_forced_row_security() {
    let db = raw(&owner_url()).await;
    let rows = query(
        &db,
        "SELECT c.relname::text AS table_name,
                c.relrowsecurity AND c.relforcerowsecurity AS forced,
                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relname IN ('tenants', 'platform_admins')",
    )
    .await;
    assert_eq!(rows.len(), 2);
    for r in rows {
        let table: String = r.try_get("", "table_name").unwrap();
        assert!(r.try_get::<bool>("", "forced").unwrap(), "{table}");
        assert!(r.try_get::<i64>("", "policies").unwrap() > 0, "{table}");
    }
}

/// `int2vector`/`int2[]` text (`"1 2"` or `"{1,2}"`) to attribute numbers.
fn attnums(text: &str) -> Vec<i16> {
    text.trim_matches(|c| c == '{' || c == '}')
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn every_foreign_key_is_covered_by_an_index() {
    let db = raw(&owner_url()).await;
    let fks = query(
        &db,
        "SELECT con.conname::text AS name, con.conrelid::bigint AS rel,
                con.conrelid::regclass::text AS table_name, con.conkey::text AS cols
           FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
          WHERE con.contype = 'f' AND n.nspname = 'public'",
    )
    .await;
    // Only whole-table indexes count: a partial one cannot serve every lookup.
    let idx = query(
        &db,
        "SELECT i.indrelid::bigint AS rel, i.indkey::text AS cols
           FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND i.indpred IS NULL",
    )
    .await;
    let mut indexes: HashMap<i64, Vec<Vec<i16>>> = HashMap::new();
    for r in idx {
        let rel: i64 = r.try_get("", "rel").unwrap();
        let cols: String = r.try_get("", "cols").unwrap();
        indexes.entry(rel).or_default().push(attnums(&cols));
    }

    let mut problems = Vec::new();
    for fk in &fks {
        let name: String = fk.try_get("", "name").unwrap();
        let table: String = fk.try_get("", "table_name").unwrap();
        let rel: i64 = fk.try_get("", "rel").unwrap();
        let mut cols = attnums(&fk.try_get::<String>("", "cols").unwrap());
        cols.sort_unstable();
        // The FK's columns, in any order, must be the index's leading columns.
        let covered = indexes.get(&rel).into_iter().flatten().any(|index| {
            index.len() >= cols.len() && {
                let mut lead = index[..cols.len()].to_vec();
                lead.sort_unstable();
                lead == cols
            }
        });
        if !covered {
            problems.push(format!("{table}.{name}: no index leads with its columns"));
        }
    }
    fail_if_any(&problems);
    assert!(fks.len() >= 8, "only {} foreign keys found", fks.len());
}

#[tokio::test]
async fn foreign_keys_between_tenant_tables_include_tenant_id() {
    let db = raw(&owner_url()).await;
    let rows = query(
        &db,
        "SELECT con.conrelid::regclass::text || '.' || con.conname AS fk
           FROM pg_constraint con
           JOIN pg_namespace n ON n.oid = con.connamespace
           JOIN pg_attribute ta ON ta.attrelid = con.conrelid
                               AND ta.attname = 'tenant_id' AND NOT ta.attisdropped
           JOIN pg_attribute fa ON fa.attrelid = con.confrelid
                               AND fa.attname = 'tenant_id' AND NOT fa.attisdropped
          WHERE con.contype = 'f' AND n.nspname = 'public'
            AND NOT EXISTS (
                SELECT 1 FROM generate_subscripts(con.conkey, 1) AS s
                 WHERE con.conkey[s] = ta.attnum AND con.confkey[s] = fa.attnum)",
    )
    .await;
    let problems: Vec<String> = rows
        .iter()
        .map(|r| {
            let fk: String = r.try_get("", "fk").unwrap();
            format!("{fk}: does not pair tenant_id with the referenced tenant_id")
        })
        .collect();
    fail_if_any(&problems);
}

#[tokio::test]
async fn every_timestamp_has_a_time_zone() {
    let db = raw(&owner_url()).await;
    let rows = query(
        &db,
        &format!(
            "SELECT c.relname || '.' || a.attname AS col
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
                AND a.attnum > 0 AND NOT a.attisdropped
                AND a.atttypid IN ('timestamp'::regtype, 'timestamp[]'::regtype)
                AND c.relname NOT IN ({NOT_OURS})"
        ),
    )
    .await;
    let problems: Vec<String> = rows
        .iter()
        .map(|r| {
            let col: String = r.try_get("", "col").unwrap();
            format!("{col}: timestamp without time zone (use timestamptz)")
        })
        .collect();
    fail_if_any(&problems);
}

#[tokio::test]
async fn full_text_indexes_keep_no_pending_list_that_searches_would_scan() {
    let db = raw(&owner_url()).await;
    let rows = query(
        &db,
        "SELECT i.relname AS index
           FROM pg_class i
           JOIN pg_am am ON am.oid = i.relam
           JOIN pg_namespace n ON n.oid = i.relnamespace
          WHERE n.nspname = 'public' AND i.relkind = 'i' AND am.amname = 'gin'
            AND NOT coalesce('fastupdate=off' = ANY(i.reloptions), false)",
    )
    .await;
    let problems: Vec<String> = rows
        .iter()
        .map(|r| {
            let index: String = r.try_get("", "index").unwrap();
            format!("{index}: GIN index with fastupdate on (searches scan its pending list)")
        })
        .collect();
    fail_if_any(&problems);
}

#[tokio::test]
async fn every_trellis_function_resolves_names_through_a_fixed_path_with_pg_temp_last() {
    let db = raw(&owner_url()).await;
    let rows = query(
        &db,
        "SELECT p.oid::regprocedure::text AS function,
                coalesce((SELECT c FROM unnest(p.proconfig) AS c
                           WHERE c LIKE 'search_path=%'), '') AS path
           FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'public' AND p.proname LIKE 'trellis\\_%'
          ORDER BY 1",
    )
    .await;
    assert!(rows.len() >= 10, "the migrations' functions were not found");
    let problems: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let function: String = r.try_get("", "function").unwrap();
            let path: String = r.try_get("", "path").unwrap();
            (path != "search_path=pg_catalog, public, pg_temp").then(|| {
                format!(
                    "{function}: search_path must be fixed with pg_temp last (got {path:?}); \
                     add `SET search_path = pg_catalog, public, pg_temp` to the function"
                )
            })
        })
        .collect();
    fail_if_any(&problems);
}
