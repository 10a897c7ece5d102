//! The port conformance suite, the same cases the in-memory adapter passes, against
//! PostgreSQL as the application role: once as the app connects (hot reads
//! pipelined, on a loopback server), and once with every read on the sqlx path.

use super::support::store;
use trellis_conformance::{Ports, conformance_tests};

async fn ports() -> Ports {
    Ports::from_one(store().await)
}

conformance_tests!(ports());

mod without_pipelined_reads {
    use super::store;
    use trellis_conformance::{Ports, conformance_tests};

    async fn ports() -> Ports {
        Ports::from_one(store().await.without_pipelined_reads())
    }

    conformance_tests!(ports());
}
