//! The migrations themselves: applying them again is a no-op, and every `down`
//! really undoes its `up` (checked in a scratch database, so the shared one that other
//! tests use is never rolled back under them).

use super::support::{Scratch, migrated, owner_url, query};
use sea_orm::Database;
use trellis_migrations::{Migrator, MigratorTrait};

#[tokio::test]
async fn migrating_an_up_to_date_database_changes_nothing() {
    migrated().await;
    trellis_postgres::migrate(&owner_url()).await.unwrap();
}

#[tokio::test]
async fn every_migration_rolls_back_and_reapplies_cleanly() {
    let scratch = Scratch::new().await;
    let scratch_url = scratch.url.clone();
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
    scratch.drop_database().await;
}
