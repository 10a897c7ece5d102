//! The port conformance suite, the same cases the in-memory adapter passes, against
//! PostgreSQL as the application role.

use super::support::store;
use trellis_conformance::{Ports, conformance_tests};

async fn ports() -> Ports {
    Ports::from_one(store().await)
}

conformance_tests!(ports());
