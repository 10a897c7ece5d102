//! Black-box tests: the real `trellis` app on an ephemeral port against a migrated
//! PostgreSQL, driven over HTTP as a client would. Run with `cargo xtask test`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod api_keys;
mod auth;
mod chat_history;
mod content;
mod files;
mod isolation;
mod model_change;
mod openai;
mod ops;
mod quotas;
mod rag;
mod tenants;
mod tools;
mod users;
