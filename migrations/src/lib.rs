//! The Trellis database schema as an ordered list of sea-orm migrations.
//!
//! Each migration is raw SQL (the DDL is the reviewable artefact, and row-level security,
//! partial unique indexes and comments are clearer in SQL than in a builder). A landed
//! migration is never edited: change the schema by adding a new file. Seed data never
//! lives here (`cargo xtask seed` loads fixtures).

use sea_orm_migration::prelude::*;

/// Defines `Migration` for a module whose migration is its `UP` and `DOWN` SQL.
macro_rules! sql_migration {
    () => {
        #[derive(DeriveMigrationName)]
        pub struct Migration;

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
    };
}

mod m20261122_000001_create_tenancy;
mod m20261122_000002_create_identity;
mod m20261122_000003_create_rag;
mod m20261122_000004_rag_model_change;
mod m20261122_000005_create_content;
mod m20261122_000006_vector_generations;
mod m20261202_000007_gin_without_pending_list;
mod m20261202_000008_rank_chunk_text;
mod m20261203_000009_user_change_notifications;
mod m20261203_000010_collection_change_notifications;
mod m20261203_000011_tenant_llm_change_notifications;
mod m20261203_000012_catalog_change_notifications;
mod m20261203_000013_quota_change_notifications;
mod m20261203_000014_usage_day_totals;
mod m20261204_000015_pin_function_search_paths;
mod m20261204_000016_tenant_llm_base_url;

pub use sea_orm_migration::MigratorTrait;

/// Every migration of the schema, oldest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_tenancy::Migration),
            Box::new(m20261122_000002_create_identity::Migration),
            Box::new(m20261122_000003_create_rag::Migration),
            Box::new(m20261122_000004_rag_model_change::Migration),
            Box::new(m20261122_000005_create_content::Migration),
            Box::new(m20261122_000006_vector_generations::Migration),
            Box::new(m20261202_000007_gin_without_pending_list::Migration),
            Box::new(m20261202_000008_rank_chunk_text::Migration),
            Box::new(m20261203_000009_user_change_notifications::Migration),
            Box::new(m20261203_000010_collection_change_notifications::Migration),
            Box::new(m20261203_000011_tenant_llm_change_notifications::Migration),
            Box::new(m20261203_000012_catalog_change_notifications::Migration),
            Box::new(m20261203_000013_quota_change_notifications::Migration),
            Box::new(m20261203_000014_usage_day_totals::Migration),
            Box::new(m20261204_000015_pin_function_search_paths::Migration),
            Box::new(m20261204_000016_tenant_llm_base_url::Migration),
        ]
    }
}
