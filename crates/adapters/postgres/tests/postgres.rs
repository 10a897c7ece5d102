//! The Postgres adapter against a real PostgreSQL: row-level security really isolates
//! tenants, the schema follows the tenancy rules, the application role cannot escape
//! them, and the behaviour only a database has (atomic units of work, concurrent
//! compare-and-set, cascades, migrations) holds.
//!
//! Needs `DATABASE_URL` and `TRELLIS_MIGRATION_DATABASE_URL`; `cargo xtask test` sets
//! both. Tests share one database and stay apart by creating their own tenants.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod postgres {
    pub mod adapter;
    pub mod collection_cache;
    pub mod conformance;
    pub mod content_conformance;
    pub mod content_repos;
    pub mod migrations;
    pub mod rag_conformance;
    pub mod rag_jobs;
    pub mod rag_repos;
    pub mod rag_search;
    pub mod rag_support;
    pub mod rag_text_replica;
    pub mod rag_vector_cache;
    pub mod rls;
    pub mod roles;
    pub mod schema;
    pub mod support;
    pub mod tenant_cache;
    pub mod usage_days;
    pub mod user_cache;
}
