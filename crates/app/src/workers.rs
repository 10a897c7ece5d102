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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use trellis_embed::{EmbedConfig, StaticRegistry};
    use trellis_kernel::{SystemClock, TenantCtx, TenantId};
    use trellis_memory::MemoryRag;
    use trellis_rag::service::{CreateCollection, RagConfig, Upload};
    use trellis_rag::{DocumentStatus, ExtractError, Extracted, SourceType, TextExtractor};

    /// Extracts a file as text, but only once the test opens its gate.
    struct GatedExtractor {
        started: AtomicBool,
        gate: Mutex<mpsc::Receiver<()>>,
    }

    impl TextExtractor for GatedExtractor {
        fn sniff(&self, _bytes: &[u8], _filename: &str) -> Option<String> {
            Some("text/plain".into())
        }

        fn extract(&self, bytes: &[u8], _filename: &str) -> Result<Extracted, ExtractError> {
            self.started.store(true, Ordering::SeqCst);
            let gate = self.gate.lock().unwrap();
            if gate.recv_timeout(Duration::from_secs(10)).is_err() {
                return Err(ExtractError::Corrupt(
                    "the gate was not opened: the test's task never ran".into(),
                ));
            }
            Ok(Extracted {
                mime_type: "text/plain".into(),
                text: String::from_utf8_lossy(bytes).into_owned(),
                page_starts: Vec::new(),
            })
        }
    }

    /// Fails the way a bug in a parser would.
    struct PanickingExtractor;

    impl TextExtractor for PanickingExtractor {
        fn sniff(&self, _bytes: &[u8], _filename: &str) -> Option<String> {
            Some("text/plain".into())
        }

        fn extract(&self, _bytes: &[u8], _filename: &str) -> Result<Extracted, ExtractError> {
            panic!("index out of bounds in the parser")
        }
    }

    /// The service as `trellis serve` wires it, on in-memory storage.
    fn rag_with(extractor: Arc<dyn TextExtractor>) -> Arc<RagService> {
        let store = MemoryRag::new();
        Arc::new(crate::bootstrap::rag_service(
            crate::bootstrap::rag_store_ports(&store, Arc::new(store.clone())),
            Arc::new(StaticRegistry::from_config(&EmbedConfig::default()).unwrap()),
            extractor,
            Arc::new(SystemClock),
            RagConfig::default(),
        ))
    }

    /// Uploads one small text file into a new collection of a new tenant.
    async fn upload_one(rag: &RagService) -> (TenantCtx, trellis_rag::DocumentId) {
        let ctx = TenantCtx::system(TenantId::new());
        let collection = rag
            .create_collection(
                &ctx,
                CreateCollection {
                    name: "Handbook".into(),
                    description: None,
                    agent_id: None,
                    source_type: SourceType::Upload,
                    chunking: Default::default(),
                    embedding_model: None,
                },
            )
            .await
            .unwrap();
        let document = rag
            .upload(
                &ctx,
                collection.id,
                Upload {
                    original_name: "refunds.txt".into(),
                    bytes: b"Refunds take 14 days.".to_vec(),
                    metadata: Default::default(),
                },
            )
            .await
            .unwrap()
            .document;
        (ctx, document.id)
    }

    /// The document once it is processed or failed (or after ten seconds).
    async fn settled(
        rag: &RagService,
        ctx: &TenantCtx,
        id: trellis_rag::DocumentId,
    ) -> trellis_rag::Document {
        for _ in 0..2000 {
            let document = rag.get_document(ctx, id).await.unwrap();
            if matches!(
                document.status,
                DocumentStatus::Processed | DocumentStatus::Error
            ) {
                return document;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rag.get_document(ctx, id).await.unwrap()
    }

    // One thread runs both the worker and this test: the gate can only be opened
    // while the extraction waits somewhere else, as it must with `per-core` serving.
    #[tokio::test(flavor = "current_thread")]
    async fn a_document_being_extracted_does_not_hold_up_the_other_tasks_of_its_runtime() {
        let (open, gate) = mpsc::channel();
        let extractor = Arc::new(GatedExtractor {
            started: AtomicBool::new(false),
            gate: Mutex::new(gate),
        });
        let rag = rag_with(extractor.clone());
        let (ctx, id) = upload_one(&rag).await;

        let workers = Workers::spawn(rag.clone(), 1, DEFAULT_LEASE);
        let started = async {
            while !extractor.started.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), started)
            .await
            .expect("the worker started extracting");
        open.send(()).unwrap();
        let document = settled(&rag, &ctx, id).await;
        workers.shutdown().await;
        assert_eq!(
            document.status,
            DocumentStatus::Processed,
            "{:?}",
            document.error
        );
        assert_eq!(document.chunk_count, 1);
    }

    #[tokio::test]
    async fn a_file_whose_extraction_panics_ends_in_error_at_once_and_the_worker_goes_on() {
        let rag = rag_with(Arc::new(PanickingExtractor));
        let (ctx, first) = upload_one(&rag).await;
        let (other, second) = upload_one(&rag).await;
        let workers = Workers::spawn(rag.clone(), 1, DEFAULT_LEASE);
        for (ctx, id) in [(&ctx, first), (&other, second)] {
            let document = settled(&rag, ctx, id).await;
            assert_eq!(document.status, DocumentStatus::Error);
            let error = document.error.unwrap_or_default();
            assert!(error.contains("index out of bounds"), "{error}");
        }
        workers.shutdown().await;
    }
}
