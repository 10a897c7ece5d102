//! The `memories` table, keyed by `(tenant_id, id)`. The generated `tsv` column is
//! left out: the database computes it and only full-text SQL reads it, as the rank of
//! a [`MemoryHit`].

use sea_orm::FromQueryResult;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "memories")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub owner_id: Uuid,
    pub key: String,
    pub value: String,
    pub category: Option<String>,
    pub source: String,
    pub source_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// A memory found by full-text search, with its rank under the alias [`RANK`].
#[derive(Clone, Debug, PartialEq, FromQueryResult)]
pub struct MemoryHit {
    #[sea_orm(nested)]
    pub memory: Model,
    pub rank: f32,
}

/// The alias of [`MemoryHit::rank`].
pub const RANK: &str = "rank";
