//! The Postgres adapter of Trellis: SeaORM entities, the repositories that implement
//! the tenancy, identity, RAG and content ports on [`PgStore`] (pgvector search, the
//! durable job queue and full-text search of messages and memories included), and
//! [`migrate`].
//!
//! Tenancy is enforced here twice: every unit of work is a transaction scoped with
//! `SET LOCAL trellis.tenant_id = '…'` (or platform mode) so the database's
//! row-level security policies apply, and every query filters by `tenant_id` as well.

mod content_mapper;
mod entity;
mod error;
mod jsonb;
mod mapper;
mod migrate;
mod pipelined;
mod rag_mapper;
mod repo;
mod store;
mod txn;

pub use migrate::migrate;
pub use pipelined::{HEDGE_AFTER, PipelinedCounts, enter_runtime};
pub use repo::{
    DEFAULT_MAX_CACHED_COLLECTIONS, DEFAULT_MAX_CACHED_TENANTS, DEFAULT_MAX_CACHED_USERS,
    DEFAULT_MAX_VECTORS, PgCachedCollections, PgCachedTenants, PgCachedUsers, PgVectorCache,
};
pub use store::{DEFAULT_PIPELINED_CONNECTIONS, PgStore};
