//! The `messages` table, keyed by `(tenant_id, id)`. The generated `tsv` column is
//! left out: the database computes it and only full-text SQL reads it. A message's
//! attached files are rows of `message_files`; reads go through [`MessageRow`], which
//! brings them along in the same query.

use sea_orm::FromQueryResult;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub role: String,
    pub content: String,
    pub author_id: Option<Uuid>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub error: Option<String>,
    pub unfinished: bool,
    #[sea_orm(column_type = "JsonBinary")]
    pub citations: Json,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// A message with its attached file ids in order (a JSON array aggregated from
/// `message_files` under the alias [`FILE_IDS`]).
#[derive(Clone, Debug, PartialEq, FromQueryResult)]
pub struct MessageRow {
    #[sea_orm(nested)]
    pub message: Model,
    pub file_ids: Json,
}

/// The alias of [`MessageRow::file_ids`].
pub const FILE_IDS: &str = "file_ids";
