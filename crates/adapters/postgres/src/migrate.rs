//! Applying the schema: the one function the app and xtask call to migrate.

use anyhow::Context as _;
use sea_orm::{ConnectOptions, ConnectionTrait as _, Database};
use trellis_migrations::{Migrator, MigratorTrait as _};

/// Session advisory-lock key held while migrating ("trellis" in ASCII), so that test
/// binaries or app instances starting together apply each migration exactly once.
const MIGRATION_LOCK: i64 = 0x0074_7265_6c6c_6973;

/// Applies every pending migration. Run it as the role that owns the schema
/// (`TRELLIS_MIGRATION_DATABASE_URL`), not as the application role.
///
/// # Errors
/// When the database cannot be reached or a migration fails (that migration is
/// rolled back; the ones before it stay applied).
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    // One connection, so the session-level advisory lock covers every statement the
    // migrator runs.
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    let db = Database::connect(opts)
        .await
        .context("failed to connect to Postgres to migrate")?;
    db.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .await
        .context("failed to take the migration lock")?;
    let applied = Migrator::up(&db, None).await;
    let unlocked = db
        .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .await;
    // Closing the connection would release the lock anyway; closing errors are moot.
    let _ = db.close().await;
    applied.context("failed to apply migrations")?;
    unlocked.context("failed to release the migration lock")?;
    Ok(())
}
