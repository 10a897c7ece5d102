//! The Trellis application: reads configuration, chooses adapters (the only place that
//! does), wires them into the domain services and serves the HTTP API. The `trellis`
//! binary is a thin CLI over this library; black-box tests boot it the same way.

pub mod attachments;
pub mod bootstrap;
pub mod chat;
pub mod config;
pub mod listen;
pub mod reindex;
pub mod retriever;
pub mod runtimes;
pub mod seed;
pub mod workers;

pub use bootstrap::{App, Storage, bootstrap};
pub use config::BlobSetting;
pub use config::{Config, PasswordCost, RuntimeSetting};
