//! The `llm_models` table: the platform's model catalogue, keyed by
//! `(provider, name)` and shared by every tenant.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "llm_models")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub provider: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub context_window: i32,
    pub supports_streaming: bool,
    pub input_micro_usd_per_1k: i64,
    pub output_micro_usd_per_1k: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
