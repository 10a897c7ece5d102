//! Black-box tests: the real `trellis` app on an ephemeral port against a migrated
//! PostgreSQL, driven over HTTP as a client would. Run with `cargo xtask test`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod api_keys;
mod auth;
mod content;
mod isolation;
mod model_change;
mod ops;
mod rag;
mod tenants;
mod users;
