//! The port through which domain services run CPU-bound steps (hashing an upload,
//! extracting a file's text) where they cannot hold up the tasks that serve
//! requests: `trellis serve` runs one single-threaded runtime per core, so a step of
//! tens of milliseconds there stalls every connection on that core. Domain crates run
//! no runtime themselves; the app wires this to Tokio's blocking threads.

/// Runs a blocking step somewhere it holds up no request; with Tokio it is
/// `tokio::task::spawn_blocking`, and [`RunInline`] runs the step where it is called.
pub trait BlockingRunner: Send + Sync + 'static {
    /// Starts `work`, which never panics ([`run_blocking`] catches that inside it).
    /// The caller learns the outcome from what `work` sends back, so a runner that
    /// drops `work` unrun reads as [`BlockingFailure::Dropped`].
    fn run(&self, work: Box<dyn FnOnce() + Send + 'static>);
}

/// Runs blocking steps on the caller's thread: for embedders whose calls run where a
/// stalled thread holds up nothing else, and for tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunInline;

impl BlockingRunner for RunInline {
    fn run(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        work();
    }
}

/// Why a blocking step gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockingFailure {
    /// The step panicked: trying again would panic again.
    #[error("the step panicked: {0}")]
    Panicked(String),
    /// The runner dropped the step before it ran (a runtime shutting down): a later
    /// try may succeed.
    #[error("the step was dropped before it ran")]
    Dropped,
}

/// Runs `work` on `runner` and waits for its result.
///
/// # Errors
/// [`BlockingFailure`] when `work` panicked or never ran.
pub async fn run_blocking<T: Send + 'static>(
    runner: &dyn BlockingRunner,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BlockingFailure> {
    let (tx, rx) = futures::channel::oneshot::channel();
    runner.run(Box::new(move || {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                BlockingFailure::Panicked(message)
            });
        // The receiver is gone only when the caller itself was dropped.
        let _ = tx.send(outcome);
    }));
    rx.await.unwrap_or(Err(BlockingFailure::Dropped))
}

/// Reads an upload on `runner`: `look` (sniffing its type, say) runs over the bytes and
/// then they are hashed ([`crate::secrets::fingerprint_bytes`], the upload's
/// checksum). Both pass over every byte, tens of milliseconds for the tens of MiB an
/// upload may hold: too long for a thread that serves other requests. Gives the bytes
/// back with what `look` found and the checksum.
///
/// # Errors
/// [`BlockingFailure`] when the step panicked or the runner dropped it (shutdown).
pub async fn inspect_upload<T: Send + 'static>(
    runner: &dyn BlockingRunner,
    bytes: Vec<u8>,
    look: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<(Vec<u8>, T, String), BlockingFailure> {
    run_blocking(runner, move || {
        let found = look(&bytes);
        let checksum = crate::secrets::fingerprint_bytes(&bytes);
        (bytes, found, checksum)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dropping;

    impl BlockingRunner for Dropping {
        fn run(&self, work: Box<dyn FnOnce() + Send + 'static>) {
            drop(work);
        }
    }

    #[tokio::test]
    async fn a_step_gives_back_its_result_a_panic_its_message_and_a_dropped_step_says_so() {
        assert_eq!(run_blocking(&RunInline, || 6 * 7).await, Ok(42));
        assert_eq!(
            run_blocking(&RunInline, || -> u8 { panic!("bad offset") }).await,
            Err(BlockingFailure::Panicked("bad offset".into()))
        );
        assert_eq!(
            run_blocking(&Dropping, || 1).await,
            Err(BlockingFailure::Dropped)
        );
    }

    #[tokio::test]
    async fn an_upload_is_looked_at_hashed_and_given_back_whole() {
        let (bytes, len, checksum) = inspect_upload(&RunInline, b"abc".to_vec(), <[u8]>::len)
            .await
            .unwrap();
        assert_eq!(bytes, b"abc");
        assert_eq!(len, 3);
        assert_eq!(checksum, crate::secrets::fingerprint_bytes(b"abc"));
    }
}
