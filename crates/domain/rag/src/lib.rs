//! Retrieval-augmented generation over each tenant's knowledge: collections of
//! documents, cut into cited chunks, embedded and searched by vector, full text or
//! both. The in-process vector index (`index`) is pure Rust and testable without a
//! database; the ports say what adapters must provide.

pub mod chunker;
pub mod error;
pub mod fusion;
pub mod index;
pub mod model;
pub mod ports;
pub mod service;

pub use error::{RagError, Result};
pub use model::*;
pub use ports::*;
