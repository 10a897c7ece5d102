//! The port implementations on [`PgStore`](crate::PgStore), one module per port. Each
//! method is one unit of work through the store's scoped-transaction helpers, and
//! every query also names its `tenant_id` (defence in depth behind row-level security).

mod api_keys;
mod collection_cache;
mod content_agents;
mod content_catalog;
mod content_common;
mod content_conversations;
mod content_files;
mod content_memories;
mod content_messages;
mod content_tools;
mod content_usage;
mod kept_sql;
mod memberships;
mod notice_cache;
mod platform_admins;
mod rag_chunks;
mod rag_collections;
mod rag_common;
mod rag_documents;
mod rag_jobs;
mod rag_model_change;
mod rag_search;
mod rag_text_candidates;
mod rag_vector_cache;
mod refresh_tokens;
mod tenant_cache;
mod tenants;
mod user_cache;
mod users;

/// Serialises a domain value into a `jsonb` column value.
fn to_json<T: serde::Serialize + ?Sized>(
    value: &T,
    what: &str,
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context as _;
    serde_json::to_value(value).with_context(|| format!("failed to serialise {what}"))
}

pub use collection_cache::{DEFAULT_MAX_CACHED_COLLECTIONS, PgCachedCollections};
pub use rag_vector_cache::{DEFAULT_MAX_VECTORS, PgVectorCache};
pub use tenant_cache::{DEFAULT_MAX_CACHED_TENANTS, PgCachedTenants};
pub use user_cache::{DEFAULT_MAX_CACHED_USERS, PgCachedUsers};
