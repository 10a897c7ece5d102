//! The `agents` table, keyed by `(tenant_id, id)`: an agent's current configuration.
//! Its tools are rows of `agent_tools`; reads go through [`AgentRow`], which brings
//! them along in the same query.

use sea_orm::FromQueryResult;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub instructions: String,
    pub provider: String,
    pub model: String,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<i32>,
    #[sea_orm(column_type = "JsonBinary")]
    pub knowledge_collection_ids: Json,
    pub output_format: Option<String>,
    pub icon: Option<String>,
    pub tier: String,
    pub published: bool,
    #[sea_orm(column_type = "JsonBinary")]
    pub allowed_roles: Json,
    pub version: i32,
    pub created_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// An agent with its tool ids in order (a JSON array aggregated from `agent_tools`
/// under the alias [`TOOL_IDS`]).
#[derive(Clone, Debug, PartialEq, FromQueryResult)]
pub struct AgentRow {
    #[sea_orm(nested)]
    pub agent: Model,
    pub tool_ids: Json,
}

/// The alias of [`AgentRow::tool_ids`].
pub const TOOL_IDS: &str = "tool_ids";
