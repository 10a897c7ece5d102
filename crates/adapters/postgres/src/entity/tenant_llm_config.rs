//! The `tenant_llm_configs` table: one row per tenant.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "tenant_llm_configs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    pub provider: String,
    pub model: String,
    pub temperature: f32,
    pub max_tokens: i32,
    pub api_key_ciphertext: Option<Vec<u8>>,
    pub api_key_key_id: Option<String>,
    pub api_key_hint: Option<String>,
    pub base_url: Option<String>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
