//! The port conformance suite against the in-memory adapter.

use trellis_conformance::{Ports, conformance_tests};
use trellis_memory::MemoryStore;

async fn ports() -> Ports {
    Ports::from_one(MemoryStore::new())
}

conformance_tests!(ports());
