//! The RAG port conformance suite — the cases the in-memory adapter passes — against
//! PostgreSQL as the application role, with one store serving every port: once as the
//! app connects (reads pipelined), once with every read on sqlx.

use super::rag_jobs::queue_lock;
use super::support::store;
use async_trait::async_trait;
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use trellis_conformance::rag::RagPorts;
use trellis_conformance::{Ports, rag_conformance_tests};
use trellis_kernel::{TenantCtx, Timestamp};
use trellis_postgres::PgStore;
use trellis_rag::{ClaimedJob, JobId, JobKind, JobQueue, Result};

/// The store's queue, holding the queue tests' lock for as long as the case runs:
/// `claim` takes any tenant's job, so queue cases in one database must not overlap.
struct LockedQueue {
    store: PgStore,
    _lock: DatabaseConnection,
}

#[async_trait]
impl JobQueue for LockedQueue {
    async fn enqueue(&self, ctx: &TenantCtx, kind: JobKind) -> Result<JobId> {
        self.store.enqueue(ctx, kind).await
    }

    async fn claim(&self, lease: chrono::Duration) -> Result<Option<ClaimedJob>> {
        self.store.claim(lease).await
    }

    async fn extend(&self, job: &ClaimedJob, lease: chrono::Duration) -> Result<bool> {
        self.store.extend(job, lease).await
    }

    async fn complete(&self, job: &ClaimedJob) -> Result<()> {
        self.store.complete(job).await
    }

    async fn retry(&self, job: &ClaimedJob, error: &str, retry_at: Timestamp) -> Result<()> {
        self.store.retry(job, error, retry_at).await
    }

    async fn fail(&self, job: &ClaimedJob, error: &str) -> Result<()> {
        self.store.fail(job, error).await
    }
}

async fn ports() -> Ports {
    Ports::from_one(store().await)
}

pub(super) async fn rag() -> RagPorts {
    rag_on(store().await).await
}

/// The RAG ports of `store`, its job queue behind the queue tests' lock.
async fn rag_on(store: PgStore) -> RagPorts {
    let mut ports = RagPorts::from_one(store.clone());
    ports.jobs = Arc::new(LockedQueue {
        store,
        _lock: queue_lock().await,
    });
    ports
}

rag_conformance_tests!(ports(), rag());

/// The same cases with every read on the sqlx path (documents are read pipelined where
/// the server is on loopback, as it is here).
mod without_pipelined_reads {
    use super::{rag_on, store};
    use trellis_conformance::rag::RagPorts;
    use trellis_conformance::{Ports, rag_conformance_tests};

    async fn ports() -> Ports {
        Ports::from_one(store().await.without_pipelined_reads())
    }

    async fn rag() -> RagPorts {
        rag_on(store().await.without_pipelined_reads()).await
    }

    rag_conformance_tests!(ports(), rag());
}
