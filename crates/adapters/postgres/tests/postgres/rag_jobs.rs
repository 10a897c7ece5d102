//! The durable job queue on PostgreSQL: concurrent claims never share a job, a lease
//! that runs out hands the job to the next worker, retries wait for their time, and
//! finished jobs stay finished.
//!
//! `claim` takes the oldest due job of *any* tenant, and these tests share a database
//! with others. So the queue tests run one at a time (a session advisory lock, which
//! also covers separate test processes), and a job that is not the test's own — a
//! leftover of an interrupted run, or another suite's — is set aside while the test
//! looks for its own and put back as it was right after, so it is delayed by
//! milliseconds rather than lost.

use super::rag_support::rag_tenant;
use super::support::{app_url, begin_in, owner_url, query, raw, stmt, stmt_with, store};
use chrono::{Duration, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use std::collections::{HashMap, HashSet};
use trellis_kernel::TenantCtx;
use trellis_postgres::PgStore;
use trellis_rag::{ClaimedJob, DocumentId, JobId, JobKind, JobQueue};

/// "rag-queu" in ASCII: the lock that serialises the queue tests.
const QUEUE_TESTS_LOCK: i64 = 0x7261_672d_7175_6575;

/// A queue test's view of the shared queue.
struct Queue {
    store: PgStore,
    owner: DatabaseConnection,
    /// Holds the advisory lock for as long as the test runs (closing it releases it).
    _lock: DatabaseConnection,
    mine: HashSet<JobId>,
}

/// A job row as the database has it.
#[derive(Debug)]
struct Row {
    status: String,
    attempts: i32,
    last_error: Option<String>,
    leased: bool,
    due: bool,
}

/// A connection holding the lock that lets one queue test at a time use the queue
/// (the conformance suite's queue case takes it too). Closing it releases the lock.
pub async fn queue_lock() -> DatabaseConnection {
    let lock = raw(&owner_url()).await;
    lock.execute_unprepared(&format!("SELECT pg_advisory_lock({QUEUE_TESTS_LOCK})"))
        .await
        .unwrap();
    lock
}

impl Queue {
    async fn new() -> Self {
        Self {
            store: store().await,
            owner: raw(&owner_url()).await,
            _lock: queue_lock().await,
            mine: HashSet::new(),
        }
    }

    async fn enqueue(&mut self, ctx: &TenantCtx) -> JobId {
        let id = self
            .store
            .enqueue(ctx, JobKind::ProcessDocument(DocumentId::new()))
            .await
            .unwrap();
        self.mine.insert(id);
        id
    }

    /// The next of this test's jobs that is due. Foreign jobs claimed on the way stay
    /// leased until the search ends (so the search can get past them), then go back.
    /// A foreign job claimed a second time means the search went round the whole
    /// queue: with many foreign jobs (other tests', or a spec fuzz's that no worker
    /// ran) the first leases expire before the last job is reached, and the queue
    /// never answers "none".
    async fn claim(&mut self, lease: Duration) -> Option<ClaimedJob> {
        let mut foreign: Vec<ClaimedJob> = Vec::new();
        let mine = loop {
            match self.store.claim(lease).await.unwrap() {
                Some(job) if self.mine.contains(&job.id) => break Some(job),
                Some(job) if foreign.iter().any(|f| f.id == job.id) => {
                    foreign.push(job);
                    break None;
                }
                Some(job) => foreign.push(job),
                None => break None,
            }
        };
        self.put_back(&foreign).await;
        mine
    }

    /// Undoes claims of foreign jobs: queued again, attempt count as before. Latest
    /// first, so a job claimed twice is counted back down through both claims.
    async fn put_back(&self, jobs: &[ClaimedJob]) {
        for job in jobs.iter().rev() {
            self.worker_sql(
                &format!(
                    "UPDATE jobs SET status = 'queued', lease_until = NULL,
                            attempts = attempts - 1
                      WHERE id = $1 AND status IN ('running', 'queued') AND attempts = {}",
                    job.attempt
                ),
                job.id,
            )
            .await;
        }
    }

    /// Runs `sql` with `$1 = id` in worker mode, which sees every tenant's jobs.
    async fn worker_sql(&self, sql: &str, id: JobId) -> Vec<sea_orm::QueryResult> {
        let txn = self.owner.begin().await.unwrap();
        txn.execute_raw(stmt("SELECT set_config('trellis.worker', 'on', true)"))
            .await
            .unwrap();
        let rows = txn
            .query_all_raw(stmt_with(sql, vec![id.as_uuid().into()]))
            .await
            .unwrap();
        txn.commit().await.unwrap();
        rows
    }

    async fn row(&self, id: JobId) -> Row {
        let rows = self
            .worker_sql(
                "SELECT status, attempts, last_error, lease_until IS NOT NULL AS leased,
                        run_at <= now() AS due
                   FROM jobs WHERE id = $1",
                id,
            )
            .await;
        let r = &rows[0];
        Row {
            status: r.try_get("", "status").unwrap(),
            attempts: r.try_get("", "attempts").unwrap(),
            last_error: r.try_get("", "last_error").unwrap(),
            leased: r.try_get("", "leased").unwrap(),
            due: r.try_get("", "due").unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_hand_out_the_same_job_twice() {
    let mut q = Queue::new().await;
    let a = rag_tenant(&q.store).await;
    let b = rag_tenant(&q.store).await;
    for i in 0..20 {
        q.enqueue(if i % 2 == 0 { &a } else { &b }).await;
    }
    // Six workers claim until the queue is empty.
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let store = q.store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(job) = store.claim(Duration::seconds(60)).await.unwrap() {
                    got.push(job);
                }
                got
            })
        })
        .collect();
    let mut claims: HashMap<JobId, usize> = HashMap::new();
    let mut foreign = Vec::new();
    for w in workers {
        for job in w.await.unwrap() {
            *claims.entry(job.id).or_default() += 1;
            if q.mine.contains(&job.id) {
                assert_eq!(job.attempt, 1);
                q.store.complete(&job).await.unwrap();
            } else {
                foreign.push(job);
            }
        }
    }
    q.put_back(&foreign).await;
    let twice: Vec<_> = claims.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "handed out twice: {twice:?}");
    for id in &q.mine {
        assert_eq!(claims.get(id), Some(&1), "job {id} was not claimed");
    }
}

#[tokio::test]
async fn a_job_whose_lease_ran_out_is_claimed_again_with_one_more_attempt() {
    let mut q = Queue::new().await;
    let ctx = rag_tenant(&q.store).await;
    let id = q.enqueue(&ctx).await;
    let first = q.claim(Duration::seconds(1)).await.unwrap();
    assert_eq!((first.id, first.attempt), (id, 1));
    // Leased: nobody else gets it while the worker is alive.
    assert!(q.claim(Duration::seconds(1)).await.is_none());

    // The worker dies; its lease runs out.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let second = q.claim(Duration::seconds(30)).await.unwrap();
    assert_eq!((second.id, second.attempt), (id, 2));
    assert!(second.lease_until > first.lease_until);
    assert_eq!(second.tenant_id, ctx.tenant_id());
    q.store.complete(&second).await.unwrap();
    assert_eq!(q.row(id).await.status, "done");
}

#[tokio::test]
async fn a_stale_worker_cannot_finish_a_job_another_worker_took_over() {
    let mut q = Queue::new().await;
    let ctx = rag_tenant(&q.store).await;
    let id = q.enqueue(&ctx).await;
    let stale = q.claim(Duration::milliseconds(500)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let current = q.claim(Duration::seconds(30)).await.unwrap();
    assert_eq!(current.attempt, 2);

    // The first worker wakes up and reports; the job is no longer its to report on.
    q.store.complete(&stale).await.unwrap();
    q.store.fail(&stale, "late failure").await.unwrap();
    q.store
        .retry(&stale, "late retry", Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    let row = q.row(id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("running", 2));
    assert!(row.leased && row.last_error.is_none(), "{row:?}");

    q.store.complete(&current).await.unwrap();
    assert_eq!(q.row(id).await.status, "done");
}

#[tokio::test]
async fn a_retried_job_is_not_claimable_before_its_retry_time() {
    let mut q = Queue::new().await;
    let ctx = rag_tenant(&q.store).await;
    let id = q.enqueue(&ctx).await;
    let job = q.claim(Duration::seconds(30)).await.unwrap();
    q.store
        .retry(
            &job,
            "embedder timed out",
            Utc::now() + Duration::seconds(2),
        )
        .await
        .unwrap();
    let row = q.row(id).await;
    assert_eq!(row.status, "queued");
    assert_eq!(row.last_error.as_deref(), Some("embedder timed out"));
    assert!(!row.leased && !row.due, "{row:?}");
    assert!(q.claim(Duration::seconds(30)).await.is_none());

    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let again = q.claim(Duration::seconds(30)).await.unwrap();
    assert_eq!((again.id, again.attempt), (id, 2));
    q.store.complete(&again).await.unwrap();
}

#[tokio::test]
async fn completed_and_failed_jobs_are_final() {
    let mut q = Queue::new().await;
    let ctx = rag_tenant(&q.store).await;
    let done = q.enqueue(&ctx).await;
    let failed = q.enqueue(&ctx).await;
    let mut claimed = HashMap::new();
    while let Some(job) = q.claim(Duration::seconds(1)).await {
        claimed.insert(job.id, job);
    }
    q.store.complete(&claimed[&done]).await.unwrap();
    q.store
        .fail(&claimed[&failed], "the file is corrupt")
        .await
        .unwrap();
    // Late calls change nothing, and expired leases do not matter any more.
    q.store
        .retry(&claimed[&done], "again?", Utc::now())
        .await
        .unwrap();
    q.store.complete(&claimed[&failed]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    assert!(q.claim(Duration::seconds(30)).await.is_none());

    let d = q.row(done).await;
    assert_eq!(
        (d.status.as_str(), d.leased, d.last_error),
        ("done", false, None)
    );
    let f = q.row(failed).await;
    assert_eq!(f.status, "failed");
    assert_eq!(f.last_error.as_deref(), Some("the file is corrupt"));
    assert!(!f.leased);
}

#[tokio::test]
async fn a_job_is_visible_to_its_own_tenant_and_to_workers_only() {
    let mut q = Queue::new().await;
    let a = rag_tenant(&q.store).await;
    let b = rag_tenant(&q.store).await;
    let doc = DocumentId::new();
    let id = q
        .store
        .enqueue(&a, JobKind::ProcessDocument(doc))
        .await
        .unwrap();
    q.mine.insert(id);

    let db = raw(&app_url()).await;
    let count = |rows: Vec<sea_orm::QueryResult>| rows[0].try_get::<i64>("", "n").unwrap();
    let sql = format!("SELECT count(*) AS n FROM jobs WHERE id = '{id}'");
    for (tenant, expected) in [(a.tenant_id(), 1), (b.tenant_id(), 0)] {
        let txn = begin_in(&db, tenant).await;
        assert_eq!(count(query(&txn, &sql).await), expected);
        txn.commit().await.unwrap();
    }
    assert_eq!(count(query(&db, &sql).await), 0, "seen without a tenant");
    let txn = db.begin().await.unwrap();
    txn.execute_raw(stmt("SELECT set_config('trellis.worker', 'on', true)"))
        .await
        .unwrap();
    assert_eq!(count(query(&txn, &sql).await), 1, "hidden from a worker");
    txn.commit().await.unwrap();

    let job = q.claim(Duration::seconds(30)).await.unwrap();
    assert_eq!(job.kind, JobKind::ProcessDocument(doc));
    assert_eq!(job.tenant_id, a.tenant_id());
    q.store.complete(&job).await.unwrap();
}

#[tokio::test]
async fn a_lease_must_be_positive() {
    let store = store().await;
    assert!(store.claim(Duration::zero()).await.is_err());
    assert!(store.claim(Duration::seconds(-5)).await.is_err());
}
