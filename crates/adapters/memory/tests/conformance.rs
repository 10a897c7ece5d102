//! The port conformance suite against the in-memory adapter.

use trellis_conformance::rag::RagPorts;
use trellis_conformance::{
    Ports, conformance_tests, content_conformance_tests, rag_conformance_tests,
};
use trellis_memory::{MemoryContent, MemoryRag, MemoryStore};

async fn ports() -> Ports {
    Ports::from_one(MemoryStore::new())
}

conformance_tests!(ports());

mod rag {
    use super::*;

    /// One store per test: the memory adapter keeps tenants and RAG data apart, but
    /// the RAG store must see the tenants the identity store created (it doesn't need
    /// them, so separate instances are fine).
    async fn rag() -> RagPorts {
        RagPorts::from_one(MemoryRag::new())
    }

    rag_conformance_tests!(ports(), rag());
}

mod content {
    use super::*;
    use trellis_conformance::content::ContentPorts;

    /// Tenants and users live in the identity store; the content store only keys by
    /// their ids, so a fresh one per test is enough.
    async fn content() -> ContentPorts {
        ContentPorts::from_one(MemoryContent::new())
    }

    content_conformance_tests!(ports(), content());
}
