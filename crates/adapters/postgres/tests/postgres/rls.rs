//! Row-level security on its own, without the adapter's `WHERE tenant_id = …`: the
//! queries here name no tenant, so whatever isolation they show is the database's.

use super::support::{app_url, begin_in, query, raw, stmt, stmt_with, store, tenant, user};
use sea_orm::{ConnectionTrait, TransactionTrait};
use std::collections::HashSet;
use uuid::Uuid;

fn ids(rows: &[sea_orm::QueryResult], col: &str) -> HashSet<Uuid> {
    rows.iter()
        .map(|r| r.try_get::<Uuid>("", col).unwrap())
        .collect()
}

#[tokio::test]
async fn a_transaction_scoped_to_a_tenant_sees_only_that_tenants_users() {
    let store = store().await;
    let (a, a_ctx, a_admin) = tenant(&store).await;
    let (b, b_ctx, b_admin) = tenant(&store).await;
    let a_user = user(&store, &a_ctx, "ann@example.com").await;
    let b_user = user(&store, &b_ctx, "ann@example.com").await;

    let db = raw(&app_url()).await;
    let txn = begin_in(&db, a.id).await;
    let rows = query(&txn, "SELECT * FROM users").await;
    txn.commit().await.unwrap();

    assert_eq!(
        ids(&rows, "id"),
        HashSet::from([a_admin.as_uuid(), a_user.id.as_uuid()])
    );
    assert_eq!(ids(&rows, "tenant_id"), HashSet::from([a.id.as_uuid()]));
    for foreign in [b_admin.as_uuid(), b_user.id.as_uuid()] {
        assert!(
            !ids(&rows, "id").contains(&foreign),
            "saw B's user {foreign}"
        );
    }
    assert_ne!(a.id, b.id);
}

#[tokio::test]
async fn without_a_tenant_no_tenant_rows_are_visible() {
    let store = store().await;
    let (a, a_ctx, _) = tenant(&store).await;
    user(&store, &a_ctx, "bea@example.com").await;
    let db = raw(&app_url()).await;

    // Never set on this connection: current_setting(..., true) is NULL.
    let count = |rows: Vec<sea_orm::QueryResult>| rows[0].try_get::<i64>("", "n").unwrap();
    for table in [
        "users",
        "tenants",
        "memberships",
        "api_keys",
        "refresh_tokens",
    ] {
        let n = count(query(&db, &format!("SELECT count(*) AS n FROM {table}")).await);
        assert_eq!(n, 0, "{table} leaked {n} rows without a tenant");
    }

    // Set and then ended with a transaction: the setting is '' on this connection now,
    // which the policy's NULLIF also treats as "no tenant".
    let txn = begin_in(&db, a.id).await;
    assert!(count(query(&txn, "SELECT count(*) AS n FROM users").await) >= 2);
    txn.commit().await.unwrap();
    let n = count(query(&db, "SELECT count(*) AS n FROM users").await);
    assert_eq!(n, 0, "the tenant setting outlived its transaction");
}

#[tokio::test]
async fn writing_a_row_into_another_tenant_is_refused() {
    let store = store().await;
    let (a, _, _) = tenant(&store).await;
    let (b, _, b_admin) = tenant(&store).await;
    let db = raw(&app_url()).await;

    let txn = begin_in(&db, a.id).await;
    let insert = txn
        .execute_raw(stmt_with(
            "INSERT INTO users (tenant_id, id, email, name, role) VALUES ($1, $2, $3, $4, 'user')",
            vec![
                b.id.as_uuid().into(),
                Uuid::now_v7().into(),
                "mallory@example.com".into(),
                "Mallory".into(),
            ],
        ))
        .await;
    let err = insert.expect_err("insert into another tenant succeeded");
    assert!(
        err.to_string().contains("row-level security"),
        "unexpected error: {err}"
    );
    txn.rollback().await.unwrap();

    // Updates and deletes of another tenant's rows find nothing to touch.
    let txn = begin_in(&db, a.id).await;
    let updated = txn
        .execute_raw(stmt_with(
            "UPDATE users SET name = 'Hijacked' WHERE id = $1",
            vec![b_admin.as_uuid().into()],
        ))
        .await
        .unwrap();
    let deleted = txn
        .execute_raw(stmt_with(
            "DELETE FROM users WHERE id = $1",
            vec![b_admin.as_uuid().into()],
        ))
        .await
        .unwrap();
    txn.commit().await.unwrap();
    assert_eq!((updated.rows_affected(), deleted.rows_affected()), (0, 0));
}

#[tokio::test]
async fn a_tenant_sees_its_own_tenant_row_and_the_platform_sees_all() {
    let store = store().await;
    let (a, _, _) = tenant(&store).await;
    let (b, _, _) = tenant(&store).await;
    let db = raw(&app_url()).await;

    let txn = begin_in(&db, a.id).await;
    let rows = query(&txn, "SELECT id FROM tenants").await;
    txn.commit().await.unwrap();
    assert_eq!(ids(&rows, "id"), HashSet::from([a.id.as_uuid()]));

    let txn = db.begin().await.unwrap();
    txn.execute_raw(stmt("SELECT set_config('trellis.platform', 'on', true)"))
        .await
        .unwrap();
    let rows = query(&txn, "SELECT id FROM tenants").await;
    txn.commit().await.unwrap();
    let all = ids(&rows, "id");
    assert!(all.contains(&a.id.as_uuid()) && all.contains(&b.id.as_uuid()));
}

#[tokio::test]
async fn platform_admins_are_invisible_outside_platform_mode() {
    let store = store().await;
    let addr = format!("root-{}@example.com", Uuid::now_v7().simple());
    trellis_identity::PlatformAdminRepo::insert(
        &store,
        &trellis_kernel::PlatformCtx::system(),
        trellis_identity::NewPlatformAdmin {
            id: trellis_kernel::PlatformAdminId::new(),
            email: super::support::email(&addr),
            name: "Root".into(),
            password_hash: trellis_kernel::PasswordHash::from_phc("$argon2id$root"),
        },
    )
    .await
    .unwrap();
    let (a, _, _) = tenant(&store).await;
    let db = raw(&app_url()).await;

    let txn = begin_in(&db, a.id).await;
    let rows = query(&txn, "SELECT id FROM platform_admins").await;
    txn.commit().await.unwrap();
    assert!(rows.is_empty(), "a tenant transaction saw platform admins");

    let txn = db.begin().await.unwrap();
    txn.execute_raw(stmt("SELECT set_config('trellis.platform', 'on', true)"))
        .await
        .unwrap();
    let rows = txn
        .query_all_raw(stmt_with(
            "SELECT id FROM platform_admins WHERE email = $1",
            vec![addr.into()],
        ))
        .await
        .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(rows.len(), 1);
}
