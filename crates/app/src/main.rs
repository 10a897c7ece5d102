//! `trellis`: serve the API (default), run migrations, or seed demo data.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::IsTerminal as _;
use trellis_app::seed::seed_demo;
use trellis_app::workers::Workers;
use trellis_app::{Config, RuntimeSetting, Storage, bootstrap, reindex};

/// mimalloc instead of glibc malloc: a request allocates and frees many small buffers
/// across tokio's worker threads (hyper, sqlx rows, serde_json), which glibc served
/// with ~12% of the server's CPU per request; mimalloc's thread-local free lists are
/// markedly cheaper for that pattern (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "trellis",
    version,
    about = "Multi-tenant, AI-enabled SaaS platform core"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default). Without DATABASE_URL, runs in memory.
    Serve,
    /// Apply pending database migrations (uses TRELLIS_MIGRATION_DATABASE_URL or DATABASE_URL).
    Migrate,
    /// Create the demo tenant and a superadmin, and print their credentials.
    Seed,
    /// Move a collection to another embedding model with a progress bar. Search keeps
    /// using the old model until every chunk is re-embedded, then switches at once.
    Reindex {
        /// The tenant's id or slug.
        #[arg(long)]
        tenant: String,
        /// The collection's id.
        #[arg(long)]
        collection: String,
        /// The embedding model to move to (see GET /v1/rag/embedding-models).
        #[arg(long)]
        model: String,
    },
}

fn main() -> anyhow::Result<()> {
    // Colour only on a terminal: a log file or a collector would get the escape codes as
    // text (and every request span paid for writing them around its field names).
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,sqlx=warn,sea_orm=warn")
            }),
        )
        .init();
    let mut config = Config::from_env()?;
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    if !matches!(command, Command::Serve) {
        // Only `serve` runs a runtime per core; the other commands run on the one below,
        // whose threads all read through the first shard otherwise.
        config.runtime = RuntimeSetting::Shared;
    }
    if let RuntimeSetting::PerCore(runtimes) = config.runtime {
        return serve_per_core(config, runtimes);
    }
    // What `#[tokio::main]` builds: worker threads from `TOKIO_WORKER_THREADS`, else one
    // per core.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(config, command))
}

async fn run(config: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let url = config
                .migration_url()
                .context("set DATABASE_URL (or TRELLIS_MIGRATION_DATABASE_URL) to migrate")?;
            trellis_postgres::migrate(url).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Seed => {
            if config.database_url.is_none() {
                anyhow::bail!(
                    "set DATABASE_URL to seed a database (`trellis serve` without one seeds memory itself)"
                );
            }
            let app = bootstrap(&config).await?;
            let report = seed_demo(&app, std::env::var("TRELLIS_SEED_PASSWORD").ok()).await?;
            println!("{report}");
            Ok(())
        }
        Command::Reindex {
            tenant,
            collection,
            model,
        } => reindex(config, &tenant, &collection, &model).await,
    }
}

async fn reindex(
    config: Config,
    tenant: &str,
    collection: &str,
    model: &str,
) -> anyhow::Result<()> {
    if config.database_url.is_none() {
        anyhow::bail!("set DATABASE_URL: reindexing changes stored collections");
    }
    let app = bootstrap(&config).await?;
    let tenant = reindex::resolve_tenant(&app, tenant).await?;
    let collection: trellis_rag::index::CollectionId = collection
        .parse()
        .map_err(|_| anyhow::anyhow!("`{collection}` is not a collection id"))?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} re-embedding [{bar:40}] {pos}/{len} chunks ({percent}%, {per_sec}, eta {eta})",
        )?
        .progress_chars("=> "),
    );
    let outcome = reindex::change_model(
        &app,
        tenant,
        collection,
        model,
        config.rag.workers,
        config.rag.job_lease,
        |p| {
            bar.set_length(p.total);
            bar.set_position(p.embedded);
        },
    )
    .await?;
    bar.finish();
    match outcome {
        reindex::Outcome::Switched { model, chunks } => {
            println!("collection {collection} now searches with `{model}` ({chunks} chunks)");
            Ok(())
        }
        reindex::Outcome::Failed(error) => {
            anyhow::bail!("the change failed (search stays on the old model): {error}")
        }
    }
}

/// Everything `trellis serve` runs before it takes connections.
struct Started {
    app: trellis_app::App,
    listener: tokio::net::TcpListener,
    workers: Workers,
}

async fn start(config: &Config) -> anyhow::Result<Started> {
    let app = bootstrap(config).await?;
    if app.storage == Storage::Memory {
        tracing::warn!(
            "NO DATABASE CONFIGURED: running on in-memory storage. NOTHING PERSISTS: every tenant, user and key \
             is lost when this process stops. Set DATABASE_URL (or run `cargo xtask dev`) for PostgreSQL."
        );
        let report = seed_demo(&app, std::env::var("TRELLIS_SEED_PASSWORD").ok()).await?;
        println!("In-memory demo data (gone at exit):\n{report}");
    }
    let listener = trellis_app::listen::listen(config.bind, config.reuse_port)
        .with_context(|| format!("failed to listen on {}", config.bind))?;
    let workers = Workers::spawn(app.rag.clone(), config.rag.workers, config.rag.job_lease);
    tracing::info!(
        addr = %listener.local_addr()?,
        ingestion_workers = config.rag.workers,
        runtime = ?config.runtime,
        "trellis listening; API docs at /docs"
    );
    Ok(Started {
        app,
        listener,
        workers,
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let Started {
        app,
        listener,
        workers,
    } = start(&config).await?;
    // In-flight requests finish after Ctrl-C or SIGTERM before the process exits.
    trellis_http::serve(listener, app.router(), trellis_http::shutdown_signal()).await?;
    workers.shutdown().await;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// `serve` on one single-threaded runtime per core (`trellis_app::runtimes`). The
/// first runtime starts everything, so the ingestion workers and the connections made
/// at start-up live on it.
fn serve_per_core(config: Config, runtimes: usize) -> anyhow::Result<()> {
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    trellis_postgres::enter_runtime(0);
    let Started {
        app,
        listener,
        workers,
    } = first.block_on(start(&config))?;
    trellis_app::runtimes::serve(
        &first,
        runtimes,
        listener,
        app.router(),
        trellis_http::shutdown_signal(),
        workers.shutdown(),
    )?;
    tracing::info!("shut down cleanly");
    Ok(())
}
