//! The migrations themselves: applying them again is a no-op, and every `down`
//! really undoes its `up` (checked in a scratch database, so the shared one that other
//! tests use is never rolled back under them).

use super::support::{migrated, owner_url, query, raw};
use sea_orm::{ConnectionTrait, Database};
use trellis_migrations::{Migrator, MigratorTrait};

#[tokio::test]
async fn migrating_an_up_to_date_database_changes_nothing() {
    migrated().await;
    trellis_postgres::migrate(&owner_url()).await.unwrap();
}

#[tokio::test]
async fn every_migration_rolls_back_and_reapplies_cleanly() {
    migrated().await;
    let owner = raw(&owner_url()).await;
    let name = format!("trellis_scratch_{}", uuid::Uuid::now_v7().simple());
    owner
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("the migration role may create a scratch database (CREATEDB)");
    let mut scratch_url = url::Url::parse(&owner_url()).unwrap();
    scratch_url.set_path(&format!("/{name}"));
    let scratch_url = scratch_url.to_string();
    // pgvector is installed by a superuser (the owner role cannot), exactly as
    // `cargo xtask db up` and docs/operations.md do for the main database.
    if let Ok(admin) = std::env::var("TRELLIS_ADMIN_DATABASE_URL") {
        let mut admin_url = url::Url::parse(&admin).unwrap();
        admin_url.set_path(&format!("/{name}"));
        let admin = raw(admin_url.as_str()).await;
        admin
            .execute_unprepared("CREATE EXTENSION IF NOT EXISTS vector")
            .await
            .unwrap();
        admin.close().await.unwrap();
    }

    trellis_postgres::migrate(&scratch_url).await.unwrap();
    let db = Database::connect(scratch_url.as_str()).await.unwrap();
    let tables = "SELECT count(*) AS n FROM pg_tables
                   WHERE schemaname = 'public' AND tablename <> 'seaql_migrations'";
    let count = |rows: Vec<sea_orm::QueryResult>| rows[0].try_get::<i64>("", "n").unwrap();
    assert!(count(query(&db, tables).await) >= 8);
    Migrator::down(&db, None).await.unwrap();
    assert_eq!(
        count(query(&db, tables).await),
        0,
        "down left tables behind"
    );
    Migrator::up(&db, None).await.unwrap();
    assert!(count(query(&db, tables).await) >= 8);
    db.close().await.unwrap();

    owner
        .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}
