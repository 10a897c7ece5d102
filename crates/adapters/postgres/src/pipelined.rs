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
//! at most as many as sqlx's. They carry no TLS: the pool is only made where no TLS
//! would be lost ([`PipelinedReads::for_url`]), and where it reaches the same role and
//! database as sqlx's over a session without TLS ([`PipelinedReads::verify`]);
//! elsewhere reads take the sqlx path.

use crate::txn::{Access, Scope, opening_sql};
use anyhow::Context as _;
use sea_orm::sea_query::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use tokio::sync::Semaphore;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

/// Prepared statements kept per connection. The reads that come here are a handful of
/// shapes; the bound only guards against a caller that builds unbounded SQL.
const MAX_STATEMENTS: usize = 64;

/// The most statements one pipelined read runs: reads of a few statements that must
/// agree (a conversation and its messages), never a loop.
const MAX_READS: usize = 4;

/// How long making a connection may take (the main pool waits as long).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection with the statements prepared on it.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// The pool of pipelining connections.
pub(crate) struct PipelinedReads {
    config: Config,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

impl std::fmt::Debug for PipelinedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelinedReads")
            .field("max_connections", &self.permits.available_permits())
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
    /// A pool for `url` of at most `max_connections`, or why there is none.
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
        Ok(Self {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max_connections.max(1)),
        })
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

        let _permit = self.permits.acquire().await.context("pool closed")?;
        let mut retried = false;
        loop {
            let (conn, reused) = self.checkout().await?;
            let mut held = Held {
                pool: self,
                conn: Some(conn),
                stage: Stage::Preparing,
            };
            match held.pipeline(&opening, &reads).await {
                Ok(rows) => return Ok(Some(rows)),
                Err(e) => {
                    // Not knowing what state an error left the connection in, drop it
                    // (tokio-postgres then closes it) rather than hand it on.
                    let lost = held.conn.take().is_some_and(|c| c.client.is_closed())
                        || connection_lost(&e);
                    // The server may have ended a pooled connection just before it was
                    // taken (a restart, an idle timeout) without its task having seen
                    // it yet. The read wrote nothing, so it is simply tried again, once,
                    // on a new connection.
                    if lost && reused && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(e);
                }
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
        let (conn, _) = self.checkout().await?;
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
        self.checkin(conn, true);
        Ok(())
    }

    /// A pooled connection (`true`) or a new one.
    async fn checkout(&self) -> anyhow::Result<(Conn, bool)> {
        loop {
            let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            match idle {
                // A connection whose task has seen the server end it.
                Some(conn) if conn.client.is_closed() => {}
                Some(conn) => return Ok((conn, true)),
                None => break,
            }
        }
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .context("could not connect to Postgres for pipelined reads")?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a pipelined-read connection ended");
            }
        });
        let conn = Conn {
            client,
            statements: HashMap::new(),
        };
        Ok((conn, false))
    }

    /// Gives `conn` back: on top when it is free now, at the bottom when a read
    /// abandoned on it may still be running, so the next reads take others first.
    fn checkin(&self, conn: Conn, free: bool) {
        if let Ok(mut idle) = self.idle.lock() {
            if free {
                idle.push(conn);
            } else {
                idle.insert(0, conn);
            }
        }
    }
}

/// Where a read on a [`Held`] connection is.
#[derive(Clone, Copy)]
enum Stage {
    /// Preparing the statements: a named statement the server may be making that no
    /// `Statement` would ever close, were the read abandoned here.
    Preparing,
    /// The requests are all queued.
    Queued,
    /// Every answer is in.
    Done,
}

/// A connection taken from the pool, given back when this is dropped: when the read
/// finished, and also when the caller gave up once its requests were queued (a
/// client hung up). Queued requests run to the `ROLLBACK` whether or not anyone waits
/// for the answers, and the next read's requests queue behind them, so the connection
/// is never handed on inside the transaction. Dropping it instead would cost a new
/// connection for every cancelled request.
struct Held<'a> {
    pool: &'a PipelinedReads,
    conn: Option<Conn>,
    stage: Stage,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            match self.stage {
                Stage::Preparing => {}
                Stage::Queued => self.pool.checkin(conn, false),
                Stage::Done => self.pool.checkin(conn, true),
            }
        }
    }
}

impl Held<'_> {
    async fn pipeline(
        &mut self,
        opening: &str,
        reads: &[(&str, Vec<&(dyn ToSql + Sync)>)],
    ) -> anyhow::Result<Vec<Vec<Row>>> {
        let conn = self.conn.as_mut().context("no connection")?;
        let mut statements = Vec::with_capacity(reads.len());
        for (sql, _) in reads {
            statements.push(conn.prepared(sql).await?);
        }
        self.stage = Stage::Queued;
        // Each request is queued when its future is first polled. `join3` polls in
        // order, and `join_all` polls its few futures in order too, so the opening, the
        // statements and the `ROLLBACK` are queued in this order in the first poll and
        // go out in one write.
        let queries = statements
            .iter()
            .zip(reads)
            .map(|(statement, (_, params))| conn.client.query(statement, params));
        let (opened, rows, ended) = futures::future::join3(
            conn.client.batch_execute(opening),
            futures::future::join_all(queries),
            conn.client.batch_execute("ROLLBACK"),
        )
        .await;
        opened.context("could not open the read")?;
        ended.context("could not end the read")?;
        let rows = rows.into_iter().collect::<Result<Vec<_>, _>>()?;
        self.stage = Stage::Done;
        Ok(rows)
    }
}

impl Conn {
    /// `sql` prepared on this connection (a round trip the first time only).
    async fn prepared(&mut self, sql: &str) -> anyhow::Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
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
