//! Full-text indexes that are always ready to search. By default a GIN index buffers new
//! entries in a pending list that every search reads sequentially until (auto)vacuum
//! merges it; after a document of a few thousand chunks is ingested that list holds
//! megabytes, and the planner, pricing it, scans the whole table instead: a hybrid search
//! over 10k chunks took 12–40 ms instead of under one (`docs/benchmarks.md`, chat). With
//! `fastupdate` off each insert updates the index itself: ingestion, which runs in the
//! background, pays a little more so that every search is fast at once.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEXES: [&str; 3] = ["chunks_tsv_idx", "messages_tsv_idx", "memories_tsv_idx"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for index in INDEXES {
            db.execute_unprepared(&format!("ALTER INDEX {index} SET (fastupdate = off)"))
                .await?;
            // Merge what is already pending, so existing databases are fast at once too.
            db.execute_unprepared(&format!(
                "SELECT gin_clean_pending_list('{index}'::regclass)"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for index in INDEXES {
            db.execute_unprepared(&format!("ALTER INDEX {index} RESET (fastupdate)"))
                .await?;
        }
        Ok(())
    }
}
