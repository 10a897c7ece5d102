//! The application role cannot step around row-level security: it is no superuser,
//! has no `BYPASSRLS`, and neither owns nor can act as the owner of any table.

use super::support::{app_url, query, raw};

#[tokio::test]
async fn the_app_role_is_neither_superuser_nor_exempt_from_row_security() {
    let db = raw(&app_url()).await;
    let rows = query(
        &db,
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert!(
        !rows[0].try_get::<bool>("", "rolsuper").unwrap(),
        "app role is superuser"
    );
    assert!(
        !rows[0].try_get::<bool>("", "rolbypassrls").unwrap(),
        "app role has BYPASSRLS"
    );
    // Not even through membership in a role that has them.
    let inherited = query(
        &db,
        "SELECT r.rolname::text AS role FROM pg_roles r
          WHERE (r.rolsuper OR r.rolbypassrls)
            AND pg_has_role(current_user, r.oid, 'MEMBER')",
    )
    .await;
    let names: Vec<String> = inherited
        .iter()
        .map(|r| r.try_get("", "role").unwrap())
        .collect();
    assert!(names.is_empty(), "app role is a member of {names:?}");
}

#[tokio::test]
async fn the_app_role_owns_no_table_and_cannot_act_as_an_owner() {
    let db = raw(&app_url()).await;
    let rows = query(
        &db,
        "SELECT c.relname::text AS name, pg_get_userbyid(c.relowner)::text AS owner
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg_toast%'
            AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            AND pg_has_role(current_user, c.relowner, 'MEMBER')",
    )
    .await;
    let owned: Vec<String> = rows
        .iter()
        .map(|r| {
            let name: String = r.try_get("", "name").unwrap();
            let owner: String = r.try_get("", "owner").unwrap();
            format!("{name} (owner {owner})")
        })
        .collect();
    assert!(
        owned.is_empty(),
        "the app role owns or can act as owner of: {owned:?}"
    );
    let db_owner = query(
        &db,
        "SELECT pg_has_role(current_user, d.datdba, 'MEMBER') AS owns
           FROM pg_database d WHERE d.datname = current_database()",
    )
    .await;
    assert!(
        !db_owner[0].try_get::<bool>("", "owns").unwrap(),
        "the app role owns the database"
    );
}
