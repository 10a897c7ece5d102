//! The content port conformance suite — the cases the in-memory adapter passes —
//! against PostgreSQL as the application role, with one store serving every port: once
//! as the app connects (reads pipelined), once with every read on sqlx.

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

/// The same cases with every read on the sqlx path (conversations are read pipelined
/// where the server is on loopback, as it is here).
mod without_pipelined_reads {
    use super::store;
    use trellis_conformance::content::ContentPorts;
    use trellis_conformance::{Ports, content_conformance_tests};

    async fn ports() -> Ports {
        Ports::from_one(store().await.without_pipelined_reads())
    }

    async fn content() -> ContentPorts {
        ContentPorts::from_one(store().await.without_pipelined_reads())
    }

    content_conformance_tests!(ports(), content());
}
