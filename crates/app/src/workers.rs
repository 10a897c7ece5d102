//! The ingestion worker pool inside `trellis serve`: each worker claims a job from
//! the durable queue, runs it through the RAG service and asks again; an idle worker
//! polls every half second. While a job runs its lease is renewed every third of the
//! lease, so a long document keeps its worker; a worker that dies stops renewing, and
//! another worker picks the job up once the lease runs out.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use trellis_rag::service::RagService;
use trellis_rag::{ClaimedJob, JobQueue};

/// The default lease: how long a crashed worker's job waits before another takes it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

const IDLE_POLL: Duration = Duration::from_millis(500);

/// Started workers and the switch that stops them.
#[derive(Debug)]
pub struct Workers {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers that lease jobs for `lease` at a time.
    #[must_use]
    pub fn spawn(rag: Arc<RagService>, n: usize, lease: Duration) -> Self {
        let (stop, rx) = watch::channel(false);
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
        let handles = (0..n)
            .map(|i| {
                let rag = rag.clone();
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    loop {
                        if *rx.borrow() {
                            return;
                        }
                        let busy = match work_once(&rag, lease).await {
                            Ok(ran) => ran,
                            Err(e) => {
                                tracing::error!(worker = i, error = %format!("{e:#}"), "ingestion worker failed to use the job queue");
                                false
                            }
                        };
                        if !busy {
                            tokio::select! {
                                () = tokio::time::sleep(IDLE_POLL) => {}
                                _ = rx.changed() => {}
                            }
                        }
                    }
                })
            })
            .collect();
        Self { stop, handles }
    }

    /// Lets running jobs finish, then stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            let _ = h.await;
        }
    }
}

/// Claims and runs one job, renewing its lease meanwhile; `false` when none was due.
async fn work_once(rag: &RagService, lease: chrono::Duration) -> trellis_rag::Result<bool> {
    let Some(job) = rag.jobs().claim(lease).await? else {
        return Ok(false);
    };
    let run = rag.run_job(&job);
    tokio::pin!(run);
    let renew_every = (lease / 3).to_std().unwrap_or(Duration::from_secs(20));
    let mut renew =
        tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
    loop {
        tokio::select! {
            done = &mut run => return done.map(|()| true),
            _ = renew.tick() => renew_lease(rag.jobs().as_ref(), &job, lease).await,
        }
    }
}

async fn renew_lease(jobs: &dyn JobQueue, job: &ClaimedJob, lease: chrono::Duration) {
    match jobs.extend(job, lease).await {
        Ok(true) => {}
        // The job finishes anyway; the stale claim's results are fenced off by the queue.
        Ok(false) => {
            tracing::warn!(job = %job.id, "ingestion job lease was lost to another worker")
        }
        Err(e) => {
            tracing::warn!(job = %job.id, error = %format!("{e:#}"), "could not renew an ingestion job lease")
        }
    }
}
