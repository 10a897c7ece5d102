//! In-memory adapters: every port of every domain, kept simple and correct. This is
//! what `trellis serve` runs on when no database is configured (nothing persists), and
//! the fast path of tests. The port conformance suite keeps it honest against Postgres.

mod content;
mod identity;
mod rag;
mod store;
mod tenancy;
mod throttle;

pub use content::{FakeChatModel, MemoryContent, TokioSpawner};
pub use rag::{MemoryRag, TokioBlocking};
pub use store::MemoryStore;
pub use throttle::{InMemoryLoginThrottle, ThrottleLimits};
