//! Pipelined reads: a read-only unit of work of one statement (or a few that must
//! agree), sent to Postgres as one write instead of a round trip for each.
//!
//! sqlx waits for each statement's answer before it sends the next, and pings every
//! connection it takes back, so a one-statement read through [`crate::txn::Txn`] costs
//! three round trips: the opening (`BEGIN READ ONLY; SET LOCAL …`), the statement, and
//! the `ROLLBACK` with the pool's check. On loopback every round trip wakes the backend
//! and then the server again, and on two cores shared with Postgres those switches
//! cost more than the statements themselves. tokio-postgres sends requests made
//! together in one write and matches the answers up in order, so here the opening,
//! the statements and the `ROLLBACK` leave together: one wake-up on each side. A read
//! of several statements (a conversation and its messages) is opened on one snapshot,
//! so they agree with each other as on [`crate::txn::Txn`].
//!
//! The same rules hold as on [`crate::txn::Txn`]: the scope is set with `SET LOCAL` in
//! the transaction the statements run in, the transaction is read-only, and it always
//! ends in `ROLLBACK`, so nothing leaks to the connection's next unit of work. Postgres
//! runs a connection's requests in the order they were sent; if the opening fails,
//! the statements' rows are thrown away with it.
//!
//! These connections are a second, small pool beside sqlx's, made as load needs them,
//! and shared: a read takes an idle connection, or opens one while there are fewer
//! than the most ([`PipelinedReads::for_url`]; `crate::DEFAULT_PIPELINED_CONNECTIONS`
//! or the main pool's size, whichever is smaller, unless
//! `PgStore::with_pipelined_connections` says otherwise), or else queues behind the
//! reads on the least busy one, so no read waits for a connection to be free. Equally
//! busy connections take turns ([`PipelinedReads::pick`]). Each
//! read's requests are queued together, under a lock held for no more than the first
//! poll that queues them, so another read's requests never land inside its
//! transaction, and each ends in its own `ROLLBACK` before the next read's opening.
//! A backend that finds the next read already in its socket runs it without sleeping
//! and being woken again; with few connections that saves CPU on both sides under
//! load (`docs/benchmarks.md`, session 18).
//!
//! A read that has had no answer for a while ([`HEDGE_AFTER`], twenty times what one
//! takes under load) is sent once more, on the least busy other connection, and the
//! first answer is taken ([`PipelinedReads::answer`]). On a machine short of CPU the
//! kernel at times leaves a runnable backend off the CPU for a tenth of a second or
//! more, and every read queued on it would wait as long.
//!
//! A connection's task runs on the tokio runtime that opened it. Where the server runs
//! one single-threaded runtime per core (`trellis_postgres::enter_runtime`), each
//! runtime opens and uses connections of its own (a shard of this pool, with its share
//! of the most), so a read's rows, buffers and wake-ups stay on the thread that asked
//! for them. Threads that never entered a runtime share the first shard.
//!
//! They carry no TLS: the pool is only made where no TLS would be lost
//! ([`PipelinedReads::for_url`]), and where it reaches the same role and database as
//! sqlx's over a session without TLS ([`PipelinedReads::verify`]); elsewhere reads take
//! the sqlx path.

use crate::txn::{Access, Scope, opening_sql};
use anyhow::Context as _;
use sea_orm::sea_query::Value;
use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

/// Prepared statements kept per connection. The reads that come here are a handful of
/// shapes; the bound only guards against a caller that builds unbounded SQL.
const MAX_STATEMENTS: usize = 64;

/// The most statements one pipelined read runs: reads of a few statements that must
/// agree (a conversation and its messages), never a loop.
const MAX_READS: usize = 4;

/// How long a read waits for its answer before it is sent again on another connection.
/// A read on this path takes about a millisecond under load; one unanswered for this
/// long is queued on a backend that the kernel holds off the CPU (on two busy cores,
/// for a tenth of a second or more at times) or behind a slow read.
pub const HEDGE_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// How long making a connection may take (the main pool waits as long).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection shared by the reads that run on it, with the statements prepared on it.
struct Conn {
    client: Client,
    statements: Mutex<HashMap<String, Statement>>,
    /// Held while a read queues its requests, so that no other read's requests land
    /// between them (inside its transaction). Held only for a synchronous first poll,
    /// never across an await.
    queueing: Mutex<()>,
    /// Reads queued on this connection and not yet finished.
    in_flight: AtomicUsize,
}

/// The pool of pipelining connections: one shard per runtime that uses it.
pub(crate) struct PipelinedReads {
    config: Config,
    shards: Vec<Shard>,
    /// The most connections of all shards together.
    max_connections: AtomicUsize,
    /// Reads sent again after [`HEDGE_AFTER`], and how many of those the second
    /// connection answered first: a rising count means backends held off the CPU.
    resent: AtomicU64,
    resent_won: AtomicU64,
}

/// What pipelined reads counted since the store was made (`PgStore::pipelined_counts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelinedCounts {
    /// Reads that had no answer after [`HEDGE_AFTER`] and were sent again on another
    /// connection.
    pub resent: u64,
    /// Of those, the reads whose second copy answered first.
    pub resent_answered_first: u64,
}

/// The connections one runtime opened, and uses alone.
struct Shard {
    open: Mutex<Vec<Arc<Conn>>>,
    /// Held while a connection is made, so that a burst makes one at a time.
    connecting: tokio::sync::Mutex<()>,
    /// Where the next pick starts looking, so that equally busy connections take
    /// turns.
    turn: AtomicUsize,
}

impl Shard {
    fn new() -> Self {
        Self {
            open: Mutex::new(Vec::new()),
            connecting: tokio::sync::Mutex::new(()),
            turn: AtomicUsize::new(0),
        }
    }
}

thread_local! {
    /// Which runtime this thread runs (see [`enter_runtime`]).
    static RUNTIME: Cell<usize> = const { Cell::new(0) };
}

/// Marks this thread as the one running runtime `index` of the server's single-threaded
/// runtimes (0 for the first). Pipelined reads made on this thread then use
/// connections opened on it only: a connection's task is driven by the runtime that
/// opened it, and a read on another thread would wait for that thread to run it.
pub fn enter_runtime(index: usize) {
    RUNTIME.with(|runtime| runtime.set(index));
}

impl std::fmt::Debug for PipelinedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelinedReads")
            .field("max_connections", &self.max_connections())
            .finish_non_exhaustive()
    }
}

/// Why a URL gets no pipelined reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotPipelined {
    /// tokio-postgres does not read this URL (a parameter only sqlx knows, say).
    Unparsed(String),
    /// The URL asks for TLS (`sslmode=require` or stricter).
    TlsRequired,
    /// `sslmode=prefer` (the default) to a host that is not loopback: sqlx would use
    /// TLS where the server offers it, and these connections must not send in clear
    /// what sqlx's would have encrypted.
    TlsPreferred,
}

impl std::fmt::Display for NotPipelined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unparsed(e) => write!(f, "the database URL is not one tokio-postgres reads ({e})"),
            Self::TlsRequired => f.write_str("the database URL requires TLS"),
            Self::TlsPreferred => f.write_str(
                "the database URL prefers TLS to a host that is not loopback (set sslmode=disable where that is intended)",
            ),
        }
    }
}

/// Whether every host of `config` is on this machine: loopback addresses, `localhost`
/// or a Unix socket directory, and any `hostaddr` a loopback address.
fn local_only(config: &Config) -> bool {
    let hosts = config.get_hosts();
    // tokio-postgres connects to `hostaddr` where one is given, whatever `host` says.
    config.get_hostaddrs().iter().all(IpAddr::is_loopback)
        && !hosts.is_empty()
        && hosts.iter().all(|host| match host {
            Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            Host::Unix(_) => true,
        })
}

impl PipelinedReads {
    /// A pool for `url` of at most `max_connections` shared connections, or why there
    /// is none.
    pub(crate) fn for_url(url: &str, max_connections: usize) -> Result<Self, NotPipelined> {
        let mut config: Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| NotPipelined::Unparsed(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        match config.get_ssl_mode() {
            SslMode::Disable => {}
            SslMode::Prefer if local_only(&config) => {}
            SslMode::Prefer => return Err(NotPipelined::TlsPreferred),
            _ => return Err(NotPipelined::TlsRequired),
        }
        Ok(Self::sharded(config, 1, max_connections))
    }

    /// A pool with nothing open yet, in `shards` shards (at least one) that together
    /// open at most `max_connections`.
    fn sharded(config: Config, shards: usize, max_connections: usize) -> Self {
        Self {
            config,
            shards: (0..shards.max(1)).map(|_| Shard::new()).collect(),
            max_connections: AtomicUsize::new(max_connections.max(1)),
            resent: AtomicU64::new(0),
            resent_won: AtomicU64::new(0),
        }
    }

    /// A pool like this one, with nothing open yet, in `runtimes` shards (at least one)
    /// for a server that runs that many single-threaded runtimes: each shard opens up
    /// to its share of the most, rounded down, and at least one.
    pub(crate) fn for_runtimes(&self, runtimes: usize) -> Self {
        Self::sharded(self.config.clone(), runtimes, self.max_connections())
    }

    /// What this pool counted so far.
    pub(crate) fn counts(&self) -> PipelinedCounts {
        PipelinedCounts {
            resent: self.resent.load(Ordering::Relaxed),
            resent_answered_first: self.resent_won.load(Ordering::Relaxed),
        }
    }

    /// How many runtimes' shards this pool has.
    pub(crate) fn runtimes(&self) -> usize {
        self.shards.len()
    }

    /// Which shard the runtime on this thread uses.
    fn shard_index(&self) -> usize {
        RUNTIME.with(Cell::get) % self.shards.len()
    }

    /// The shard of the runtime on this thread.
    fn shard(&self) -> &Shard {
        &self.shards[self.shard_index()]
    }

    /// The most connections one shard opens.
    fn max_per_shard(&self) -> usize {
        (self.max_connections() / self.shards.len()).max(1)
    }

    /// Opens at most `max` connections from now on (at least one, and at least one per
    /// shard). Connections already open beyond it stay until they end.
    pub(crate) fn set_max_connections(&self, max: usize) {
        self.max_connections.store(max.max(1), Ordering::Relaxed);
    }

    /// The most connections this pool opens.
    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Relaxed)
    }

    /// Runs `stmts` in one read-only unit of work scoped to `scope` and opened for
    /// `access`, and gives each one's rows, in order. `Ok(None)` when a bound value is
    /// of a type this path does not send: the caller then takes the sqlx path.
    pub(crate) async fn rows(
        &self,
        scope: Scope,
        access: Access,
        stmts: &[sea_orm::Statement],
    ) -> anyhow::Result<Option<Vec<Vec<Row>>>> {
        anyhow::ensure!(
            (1..=MAX_READS).contains(&stmts.len()),
            "a pipelined read takes 1 to {MAX_READS} statements, not {}",
            stmts.len()
        );
        let mut bound = Vec::with_capacity(stmts.len());
        for stmt in stmts {
            let values = stmt.values.as_ref().map_or(&[][..], |v| v.0.as_slice());
            let Some(params) = values.iter().map(param).collect::<Option<Vec<_>>>() else {
                return Ok(None);
            };
            bound.push(params);
        }
        let reads: Vec<(&str, Vec<&(dyn ToSql + Sync)>)> = stmts
            .iter()
            .zip(&bound)
            .map(|(stmt, params)| {
                let params = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
                (stmt.sql.as_str(), params)
            })
            .collect();
        let opening = opening_sql(scope, access);

        let mut retried = false;
        loop {
            let (read, reused) = self.take().await?;
            match self.answer(&read.conn, &opening, &reads).await {
                Ok(rows) => return Ok(Some(rows)),
                Err(e) => {
                    // The server may have ended a connection (a restart, an idle
                    // timeout) without its task having seen it yet. A read changes
                    // nothing, so it is simply tried again, once, on another.
                    let lost = read.conn.client.is_closed() || connection_lost(&e);
                    if lost {
                        self.forget(&read.conn);
                    }
                    if lost && reused && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// `reads` run on `conn`, or, when that has not answered within [`HEDGE_AFTER`], on
    /// another connection as well ([`Self::pick_other`]), whichever answers first. A
    /// read changes nothing, so running it twice is safe; the slower copy's answers
    /// are read and dropped by its connection's task. Each read is sent again at most
    /// once, so a burst of slow reads costs at most twice the work.
    async fn answer(
        &self,
        conn: &Arc<Conn>,
        opening: &str,
        reads: &[(&str, Vec<&(dyn ToSql + Sync)>)],
    ) -> anyhow::Result<Vec<Vec<Row>>> {
        use futures::future::{Either, select};
        let mut first = std::pin::pin!(conn.pipeline(opening, reads));
        tokio::select! {
            biased;
            rows = &mut first => return rows,
            () = tokio::time::sleep(HEDGE_AFTER) => {}
        }
        let Some(other) = self.pick_other(conn) else {
            return first.await;
        };
        self.resent.fetch_add(1, Ordering::Relaxed);
        let second = std::pin::pin!(other.conn.pipeline(opening, reads));
        let forget_if_lost = |e: &anyhow::Error| {
            if other.conn.client.is_closed() || connection_lost(e) {
                self.forget(&other.conn);
            }
        };
        match select(first, second).await {
            Either::Left((Ok(rows), _)) => Ok(rows),
            Either::Right((Ok(rows), _)) => {
                self.resent_won.fetch_add(1, Ordering::Relaxed);
                Self::busy_until_caught_up(conn);
                Ok(rows)
            }
            // The first connection's error is the one the caller retries on.
            Either::Left((Err(e), second)) => second.await.map_err(|second_error| {
                forget_if_lost(&second_error);
                e
            }),
            Either::Right((Err(e), first)) => {
                forget_if_lost(&e);
                first.await
            }
        }
    }

    /// Checks that this pool reaches what the main pool reaches, over no less
    /// protection. tokio-postgres reads only the URL, where sqlx also reads `PG*`
    /// variables and `.pgpass`, and a loopback address may be a forwarder to a server
    /// sqlx negotiates TLS with. So: no pool when the main pool's session uses TLS, or
    /// when this pool's session is another role or database. The connection made for
    /// the check stays in the pool.
    pub(crate) async fn verify(&self, main: &sea_orm::sqlx::PgPool) -> anyhow::Result<()> {
        let (user, database, tls): (String, String, bool) = sea_orm::sqlx::query_as(
            "SELECT current_user::text, current_database()::text, \
                    coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
        )
        .fetch_one(main)
        .await
        .context("could not ask the main pool's session about itself")?;
        anyhow::ensure!(!tls, "the main pool's sessions use TLS");
        let conn = self.connect().await?;
        let row = conn
            .client
            .query_one("SELECT current_user::text, current_database()::text", &[])
            .await?;
        let (own_user, own_database): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        anyhow::ensure!(
            own_user == user && own_database == database,
            "the URL alone reaches {own_user}@{own_database}, the main pool {user}@{database} \
             (PG* variables or .pgpass fill in what the URL leaves out)"
        );
        lock(&self.shard().open).push(Arc::new(conn));
        Ok(())
    }

    /// A connection for one read, and whether it was open before: an idle one, else a
    /// new one while there are fewer than the most, else the least busy.
    async fn take(&self) -> anyhow::Result<(InFlight, bool)> {
        let shard = self.shard();
        if let Some(read) = self.pick(shard) {
            return Ok((read, true));
        }
        let _connecting = shard.connecting.lock().await;
        // Another read may have made one meanwhile.
        if let Some(read) = self.pick(shard) {
            return Ok((read, true));
        }
        let conn = Arc::new(self.connect().await?);
        lock(&shard.open).push(Arc::clone(&conn));
        Ok((InFlight::new(conn), false))
    }

    /// An open connection to share, or `None` when a new one should be made. Among
    /// equally busy connections each pick starts one further along, so the reads are
    /// spread over all of them: were the first idle one always taken, a few backends
    /// would run nearly every read, and on a machine short of CPU the kernel holds a
    /// backend that busy off the CPU for up to a tenth of a second at times, with
    /// every read queued on it waiting (`docs/benchmarks.md`, session 19).
    fn pick(&self, shard: &Shard) -> Option<InFlight> {
        let mut open = lock(&shard.open);
        open.retain(|conn| !conn.client.is_closed());
        if open.is_empty() {
            return None;
        }
        let full = open.len() >= self.max_per_shard();
        let start = shard.turn.fetch_add(1, Ordering::Relaxed) % open.len();
        let least = open
            .iter()
            .cycle()
            .skip(start)
            .take(open.len())
            .min_by_key(|conn| conn.in_flight.load(Ordering::Relaxed))?;
        (full || least.in_flight.load(Ordering::Relaxed) == 0)
            .then(|| InFlight::new(Arc::clone(least)))
    }

    /// For a read sent again: the least busy open connection of this thread's shard
    /// other than `slow`, else of another shard (a shard of one connection: that
    /// connection's task runs on another runtime's thread, later, but it runs). Never
    /// opens one, so a burst of slow reads cannot grow the pool beyond its most; a
    /// connection that answers, however busy, answers sooner than one whose backend is
    /// held off the CPU.
    fn pick_other(&self, slow: &Arc<Conn>) -> Option<InFlight> {
        let least_busy = |shard: &Shard| {
            lock(&shard.open)
                .iter()
                .filter(|conn| !Arc::ptr_eq(conn, slow) && !conn.client.is_closed())
                .min_by_key(|conn| conn.in_flight.load(Ordering::Relaxed))
                .cloned()
        };
        least_busy(self.shard())
            .or_else(|| self.shards.iter().find_map(least_busy))
            .map(InFlight::new)
    }

    /// Keeps `conn` counted busy until its backend has answered everything queued on
    /// it so far (an empty query queued behind the reads), so that reads taken away
    /// from a backend held off the CPU do not leave it looking idle to the next pick.
    fn busy_until_caught_up(conn: &Arc<Conn>) {
        let conn = Arc::clone(conn);
        tokio::spawn(async move {
            let _busy = InFlight::new(Arc::clone(&conn));
            let _ = queued_together(&conn, conn.client.batch_execute("")).await;
        });
    }

    /// Drops `conn` from the pool (tokio-postgres closes it once the last read on it
    /// lets go).
    fn forget(&self, conn: &Arc<Conn>) {
        for shard in &self.shards {
            lock(&shard.open).retain(|open| !Arc::ptr_eq(open, conn));
        }
    }

    async fn connect(&self) -> anyhow::Result<Conn> {
        let mut config = self.config.clone();
        if config.get_application_name().is_none() {
            // So that an operator looking at `pg_stat_activity` sees what these are.
            config.application_name(format!(
                "trellis pipelined reads, runtime {}",
                self.shard_index()
            ));
        }
        let (client, connection) = config
            .connect(NoTls)
            .await
            .context("could not connect to Postgres for pipelined reads")?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a pipelined-read connection ended");
            }
        });
        Ok(Conn {
            client,
            statements: Mutex::new(HashMap::new()),
            queueing: Mutex::new(()),
            in_flight: AtomicUsize::new(0),
        })
    }
}

/// The lock's data, also when a panic elsewhere poisoned it: the data under these locks
/// (a list of connections, a statement cache) is whole after any panic.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A read counted on its connection until it is dropped.
struct InFlight {
    conn: Arc<Conn>,
}

impl InFlight {
    fn new(conn: Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        Self { conn }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Polls `work` once with `conn`'s queueing lock held, then to its end without it: a
/// request of tokio-postgres is queued in its future's first poll, so all of `work`'s
/// requests are queued together, in order, with no other read's in between.
async fn queued_together<F: std::future::Future>(conn: &Conn, work: F) -> F::Output {
    let mut work = std::pin::pin!(work);
    let mut first = true;
    std::future::poll_fn(|cx| {
        let _queueing = std::mem::take(&mut first).then(|| lock(&conn.queueing));
        work.as_mut().poll(cx)
    })
    .await
}

impl Conn {
    async fn pipeline(
        self: &Arc<Self>,
        opening: &str,
        reads: &[(&str, Vec<&(dyn ToSql + Sync)>)],
    ) -> anyhow::Result<Vec<Vec<Row>>> {
        let mut statements = Vec::with_capacity(reads.len());
        for (sql, _) in reads {
            statements.push(self.prepared(sql).await?);
        }
        // `join3` polls in order, and `join_all` polls its few futures in order too, so
        // the opening, the statements and the `ROLLBACK` are queued in this order in
        // the first poll and go out together. Queued requests run to the `ROLLBACK`
        // whether or not anyone waits for the answers (a client that hung up), and
        // the connection's task reads and drops the answers no one waits for.
        let queries = statements
            .iter()
            .zip(reads)
            .map(|(statement, (_, params))| self.client.query(statement, params));
        let (opened, rows, ended) = queued_together(
            self,
            futures::future::join3(
                self.client.batch_execute(opening),
                futures::future::join_all(queries),
                self.client.batch_execute("ROLLBACK"),
            ),
        )
        .await;
        opened.context("could not open the read")?;
        ended.context("could not end the read")?;
        let rows = rows.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// `sql` prepared on this connection (a round trip the first time only). The
    /// preparation is queued like a read, so that it never lands inside another read's
    /// transaction, and runs on a task of its own: a caller that gives up meanwhile
    /// still leaves the statement known, not made on the server and lost here.
    async fn prepared(self: &Arc<Self>, sql: &str) -> anyhow::Result<Statement> {
        if let Some(statement) = lock(&self.statements).get(sql) {
            return Ok(statement.clone());
        }
        let conn = Arc::clone(self);
        let sql = sql.to_owned();
        tokio::spawn(async move {
            let statement = queued_together(&conn, conn.client.prepare(&sql)).await?;
            let mut statements = lock(&conn.statements);
            if statements.len() >= MAX_STATEMENTS {
                statements.clear();
            }
            statements.insert(sql, statement.clone());
            Ok(statement)
        })
        .await
        .context("the statement's preparation failed")?
    }
}

/// Whether `e` says the session is gone: the connection closed, or the server ended
/// it (SQLSTATE class 08, connection exception, or 57P, operator intervention: a
/// terminated backend, a shutdown).
fn connection_lost(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|cause| cause.downcast_ref::<tokio_postgres::Error>())
        .any(|e| {
            e.is_closed()
                || e.code()
                    .is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57P"))
        })
}

/// A bound value as tokio-postgres sends it, for the types the reads on this path bind
/// (ids, flags, text, limits). `None` for any other: the read takes the sqlx path.
fn param(value: &Value) -> Option<Box<dyn ToSql + Sync + Send>> {
    Some(match value {
        Value::Uuid(Some(u)) => Box::new(*u),
        Value::Bool(Some(b)) => Box::new(*b),
        Value::String(Some(s)) => Box::new(s.clone()),
        Value::Int(Some(i)) => Box::new(*i),
        Value::BigInt(Some(i)) => Box::new(*i),
        // sqlx sends unsigned integers as `INT8` too (`LIMIT` is one).
        Value::Unsigned(Some(i)) => Box::new(i64::from(*i)),
        Value::BigUnsigned(Some(i)) => Box::new(i64::try_from(*i).ok()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(url: &str) -> Result<(), NotPipelined> {
        PipelinedReads::for_url(url, 1).map(|_| ())
    }

    #[test]
    fn pipelined_reads_are_made_only_where_no_tls_would_be_lost() {
        assert_eq!(verdict("postgres://app:pw@127.0.0.1:5432/trellis"), Ok(()));
        assert_eq!(verdict("postgres://app:pw@localhost/trellis"), Ok(()));
        assert_eq!(verdict("postgres://app:pw@[::1]:5432/trellis"), Ok(()));
        assert_eq!(
            verdict("postgres://app:pw@db.internal/trellis?sslmode=disable"),
            Ok(())
        );
        assert_eq!(
            verdict("postgres://app:pw@db.internal/trellis"),
            Err(NotPipelined::TlsPreferred)
        );
        // tokio-postgres would connect to the `hostaddr`, not to `localhost`.
        assert_eq!(
            verdict("postgres://app:pw@localhost/trellis?hostaddr=10.0.0.5"),
            Err(NotPipelined::TlsPreferred)
        );
        assert_eq!(
            verdict("postgres://app:pw@localhost/trellis?hostaddr=127.0.0.1"),
            Ok(())
        );
        assert_eq!(
            verdict("postgres://app:pw@127.0.0.1/trellis?sslmode=require"),
            Err(NotPipelined::TlsRequired)
        );
        assert!(matches!(
            verdict("postgres://app:pw@127.0.0.1/trellis?statement-cache-capacity=5"),
            Err(NotPipelined::Unparsed(_))
        ));
    }

    #[test]
    fn only_the_value_types_reads_bind_are_sent_this_way() {
        assert!(param(&Value::Uuid(Some(uuid::Uuid::nil()))).is_some());
        assert!(param(&Value::BigUnsigned(Some(21))).is_some());
        assert!(param(&Value::BigUnsigned(Some(u64::MAX))).is_none());
        assert!(param(&Value::String(None)).is_none());
        assert!(param(&Value::Double(Some(1.0))).is_none());
    }
}
