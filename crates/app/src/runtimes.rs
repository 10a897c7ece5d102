//! Serving from one single-threaded tokio runtime per core (`TRELLIS_RUNTIME=per-core`,
//! the default of `trellis serve`).
//!
//! tokio's default runtime lets any of its threads run any task, so a request's task
//! and the task of the pipelined Postgres connection that answers it can run on
//! different cores, and the rows, buffers and wake-ups cross between them. On two
//! cores shared with Postgres that moved the users list between two rates, a quarter
//! apart (`docs/benchmarks.md`, session 20). Here each runtime is one thread: it runs
//! the connections handed to it and the pipelined reads they make
//! (`trellis_postgres::enter_runtime`), so a request's HTTP work and its hot reads
//! stay on one thread (writes on the shared sqlx pool and `spawn_blocking` work do
//! not: see below).
//!
//! One listener accepts, on the first runtime, and hands the connections to the
//! runtimes in turn, so each gets as many; several sockets on one port
//! (`SO_REUSEPORT`) would be split by a hash of the addresses, which gave one of two
//! processes 21 of 32 connections. The price of a runtime per core: a request that
//! takes long holds up the others on its thread, where the shared runtime would let an
//! idle thread take them, which is why long steps (password hashing, embedding,
//! extraction) run on blocking threads. The first runtime also accepts for all and
//! runs the ingestion workers, whose tasks only wait there.
//!
//! Everything else (the stores, caches, throttles and metrics) is one, shared by all
//! runtimes, as in the shared runtime. That includes the main sqlx pool: a connection
//! opened on one runtime and used from another is woken through the first one's
//! reactor, which a busy single-threaded runtime checks between tasks, so writes may
//! wait a little longer under load; the hot reads do not, having connections of their
//! own per runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// A connection accepted on the first runtime, on its way to the runtime that serves it.
type Handed = (std::net::TcpStream, SocketAddr);

/// Serves `router` from `listener` on `runtimes` single-threaded runtimes: `first`
/// (which made `listener`, and runs the accepting) and one more thread for each of the
/// others. Once `shutdown` completes, every runtime lets its requests finish; then
/// `finish` runs on `first` while the other runtimes still run (a connection one of
/// them opened stays usable), and then they stop.
///
/// # Errors
/// When a runtime or its thread cannot be made, or a runtime's serving failed.
pub fn serve(
    first: &tokio::runtime::Runtime,
    runtimes: usize,
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    finish: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let runtimes = runtimes.max(1);
    let local = listener.local_addr()?;
    let others = (1..runtimes)
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("could not make a runtime")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let stop = Arc::new(watch::channel(false).0);
    let (finished, _) = watch::channel(false);
    // Each runtime holds a sender until it has stopped serving (or its thread ends,
    // a panic included), so the first knows when all have without waiting for ever.
    let (serving, mut all_served) = mpsc::channel::<()>(1);
    let (to_first, for_first) = mpsc::unbounded_channel();
    let mut handing = vec![to_first];
    let mut threads = Vec::with_capacity(others.len());
    for (index, runtime) in (1..).zip(others) {
        let (to_runtime, handed) = mpsc::unbounded_channel();
        handing.push(to_runtime);
        let (router, stopped, serving, mut done) = (
            router.clone(),
            stop.subscribe(),
            serving.clone(),
            finished.subscribe(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("trellis-runtime-{index}"))
            .spawn(move || {
                trellis_postgres::enter_runtime(index);
                runtime.block_on(async move {
                    let listener = HandedListener { handed, local };
                    let result = trellis_http::serve_from(listener, router, until(stopped)).await;
                    drop(serving);
                    // Tasks and connections this runtime started may still be used
                    // by `finish` on the first.
                    let _ = done.wait_for(|done| *done).await;
                    result
                })
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                stop.send_replace(true);
                finished.send_replace(true);
                let _ = join(threads);
                return Err(e).context("could not start a runtime's thread");
            }
        }
    }
    trellis_postgres::enter_runtime(0);
    let result = first.block_on(async {
        let accepting = tokio::spawn(hand_out(listener, handing, until(stop.subscribe())));
        let stopping = Arc::clone(&stop);
        tokio::spawn(async move {
            shutdown.await;
            stopping.send_replace(true);
        });
        let listener = HandedListener {
            handed: for_first,
            local,
        };
        let result = trellis_http::serve_from(listener, router, until(stop.subscribe())).await;
        // Should the first runtime's serving end by itself, the others end too.
        stop.send_replace(true);
        let _ = accepting.await;
        drop(serving);
        while all_served.recv().await.is_some() {}
        finish.await;
        finished.send_replace(true);
        result
    });
    let joined = join(threads);
    result?;
    joined
}

/// Waits for every runtime's thread, and says whether one failed or panicked.
fn join(threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>) -> anyhow::Result<()> {
    let mut failed = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = failed.or(Some(anyhow::Error::from(e))),
            Err(_) => failed = failed.or(Some(anyhow::anyhow!("a runtime's thread panicked"))),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Completes once `stop` says so (or its sender is gone).
async fn until(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Accepts connections on `listener` and hands them to `runtimes` in turn, until
/// `stop` completes. A failed accept is handled as `axum::serve` handles it: skipped
/// when the client gave up, else logged and waited out for a second.
async fn hand_out(
    mut listener: TcpListener,
    runtimes: Vec<mpsc::UnboundedSender<Handed>>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut turns = runtimes.iter().cycle();
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => return,
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
        };
        // Out of this runtime's reactor, into the serving runtime's there.
        match stream.into_std() {
            Ok(stream) => {
                if let Some(runtime) = turns.next() {
                    // A runtime that stopped taking connections is shutting down: the
                    // connection is closed with the stream.
                    let _ = runtime.send((stream, peer));
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not hand a connection over"),
        }
    }
}

/// The connections handed to one runtime, as axum takes them from a listener.
struct HandedListener {
    handed: mpsc::UnboundedReceiver<Handed>,
    local: SocketAddr,
}

impl axum::serve::Listener for HandedListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((stream, peer)) = self.handed.recv().await else {
                // Nothing more comes once the accepting stopped; the shutdown that
                // stopped it ends the serving.
                return std::future::pending().await;
            };
            match TcpStream::from_std(stream) {
                Ok(stream) => return (stream, peer),
                Err(e) => tracing::debug!(error = %e, "could not take a handed connection"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// The address of a test server that says which thread served each request.
    fn start(
        runtimes: usize,
    ) -> (
        SocketAddr,
        std::sync::mpsc::Sender<()>,
        std::thread::JoinHandle<()>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let others_ran_during_finish = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ran = Arc::clone(&others_ran_during_finish);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let first = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let listener = first.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let router = Router::new().route(
                "/",
                axum::routing::get(|| async {
                    std::thread::current().name().unwrap_or("?").to_owned()
                }),
            );
            let shutdown = async move {
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            };
            let finish = async move {
                ran.store(runtime_threads() == runtimes - 1, Ordering::SeqCst);
            };
            serve(&first, runtimes, listener, router, shutdown, finish).unwrap();
        });
        (
            addr_rx.recv().unwrap(),
            stop_tx,
            server,
            others_ran_during_finish,
        )
    }

    /// How many of this process's threads are runtimes after the first.
    fn runtime_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("trellis-runtim"))
            .count()
    }

    async fn served_by(addr: SocketAddr) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        answer.rsplit("\r\n\r\n").next().unwrap().to_owned()
    }

    #[tokio::test]
    async fn connections_are_handed_to_every_runtime_in_turn() {
        let (addr, _stop, _server, _) = start(3);
        let mut threads = Vec::new();
        for _ in 0..6 {
            threads.push(served_by(addr).await);
        }
        let mut distinct = threads.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "served by {threads:?}");
        for name in &distinct {
            assert_eq!(
                threads.iter().filter(|t| *t == name).count(),
                2,
                "served by {threads:?}"
            );
        }
    }

    #[tokio::test]
    async fn after_shutdown_the_server_stops_taking_connections_and_returns() {
        let (addr, stop, server, others_ran_during_finish) = start(3);
        served_by(addr).await;
        stop.send(()).unwrap();
        let refused = async {
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), refused)
            .await
            .expect("the listener is closed after shutdown");
        let returned = tokio::task::spawn_blocking(move || server.join());
        tokio::time::timeout(std::time::Duration::from_secs(10), returned)
            .await
            .expect("serve returns once every runtime has stopped")
            .unwrap()
            .expect("serve neither failed nor panicked");
        assert!(
            others_ran_during_finish.load(Ordering::SeqCst),
            "the other runtimes still ran while `finish` did"
        );
        assert_eq!(runtime_threads(), 0, "and ended after it");
    }
}
