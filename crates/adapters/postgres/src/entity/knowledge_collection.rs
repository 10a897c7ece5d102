//! The `knowledge_collections` table, keyed by `(tenant_id, id)`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "knowledge_collections")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub agent_id: Option<Uuid>,
    pub source_type: String,
    pub chunk_max_tokens: i32,
    pub chunk_overlap_tokens: i32,
    pub embedding_model: String,
    pub embedding_dimension: i32,
    pub next_embedding_model: Option<String>,
    pub next_embedding_dimension: Option<i32>,
    pub model_change_status: Option<String>,
    pub model_change_error: Option<String>,
    pub model_change_started_at: Option<DateTimeUtc>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
