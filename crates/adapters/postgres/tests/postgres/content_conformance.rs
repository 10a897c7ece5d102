//! The content port conformance suite — the cases the in-memory adapter passes —
//! against PostgreSQL as the application role, with one store serving every port.

use super::support::store;
use trellis_conformance::content::ContentPorts;
use trellis_conformance::{Ports, content_conformance_tests};

async fn ports() -> Ports {
    Ports::from_one(store().await)
}

async fn content() -> ContentPorts {
    ContentPorts::from_one(store().await)
}

content_conformance_tests!(ports(), content());
