//! The `chunks` table, keyed by `(tenant_id, id)`. The generated `tsv` column is left
//! out: the database computes it and only full-text SQL reads it. Reads go through
//! [`ChunkRow`], which skips the embedding, since no domain `Chunk` carries one.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "chunks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub document_id: Uuid,
    pub collection_id: Uuid,
    pub position: i32,
    pub content: String,
    pub start_offset: i32,
    pub end_offset: i32,
    pub page: Option<i32>,
    pub section: Option<String>,
    pub token_count: i32,
    pub source_type: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: Json,
    #[sea_orm(column_type = "Vector(None)")]
    pub embedding: PgVector,
    pub embedding_dim: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// A chunk without its embedding (about 1.5 KiB at 384 dimensions, 6 KiB at 1536).
#[derive(Clone, Debug, PartialEq, DerivePartialModel)]
#[sea_orm(entity = "Entity")]
pub struct ChunkRow {
    pub id: Uuid,
    pub document_id: Uuid,
    pub collection_id: Uuid,
    pub position: i32,
    pub content: String,
    pub start_offset: i32,
    pub end_offset: i32,
    pub page: Option<i32>,
    pub section: Option<String>,
    pub token_count: i32,
    pub source_type: String,
    pub metadata: Json,
}
