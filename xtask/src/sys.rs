//! Small helpers shared by the xtask subcommands: running processes, finding programs,
//! private (mode 600) files, randomness from `/dev/urandom`, and exit codes.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Output, Stdio};

use anyhow::{Context, Result, bail};

/// A human-readable rendering of a command line (never contains secrets: we pass
/// passwords through files, stdin or the environment only).
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` with inherited stdio and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` with captured output; on failure the error carries its stdout and stderr.
pub fn run_captured(cmd: &mut Command) -> Result<Output> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({})\n{}{}",
            describe(cmd),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// Runs `cmd` with `input` on its stdin (stdout goes to our stderr); fails unless it succeeds.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(to_stderr())
        .spawn()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .with_context(|| format!("could not write to `{}`", describe(cmd)))?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// True if `cmd` can be started and exits successfully (all output discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Trimmed stdout of a successful `cmd`.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let output = run_captured(cmd)?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A `Stdio` writing to our stderr, so child chatter never pollutes our stdout.
pub fn to_stderr() -> Stdio {
    Stdio::from(std::io::stderr())
}

/// Whether `path` is a regular file with an executable bit.
pub fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Looks `name` up on `PATH`, then in the sbin directories (which non-login root
/// shells sometimes lack on `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Like [`find_program`] but an error naming the program when it is missing.
pub fn require_program(name: &str) -> Result<PathBuf> {
    find_program(name).with_context(|| format!("`{name}` was not found on PATH"))
}

/// Whether we run as root (`id -u` prints 0).
pub fn is_root() -> Result<bool> {
    Ok(stdout_of(Command::new("id").arg("-u"))? == "0")
}

/// `n` random bytes from `/dev/urandom`.
pub fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("could not read /dev/urandom")?;
    Ok(buf)
}

/// `n` random bytes as lowercase hex (URL- and SQL-literal-safe passwords).
pub fn random_hex(n: usize) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(n * 2);
    for byte in random_bytes(n)? {
        let _ = write!(out, "{byte:02x}");
    }
    Ok(out)
}

/// Writes `contents` to `path` with mode 600, atomically (temp file + rename).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp-xtask");
    let _ = fs::remove_file(&tmp);
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("could not create {}", tmp.display()))?;
        file.write_all(contents.as_bytes())
            .with_context(|| format!("could not write {}", tmp.display()))?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("could not move {} into place", path.display()))?;
    Ok(())
}

/// The trimmed contents of `path`, or `None` if it does not exist or is empty.
pub fn read_trimmed(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Ok(None),
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
    }
}

/// A secret persisted in `path` (mode 600), generated as 24 random bytes of hex on first use.
pub fn persistent_secret(path: &Path) -> Result<String> {
    if let Some(existing) = read_trimmed(path)? {
        return Ok(existing);
    }
    let secret = random_hex(24)?;
    write_private(path, &format!("{secret}\n"))?;
    Ok(secret)
}

/// Our exit code for a child's exit status (128 + signal when it was killed).
pub fn exit_code(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}

/// A non-empty environment variable.
pub fn env_nonempty(key: impl AsRef<OsStr>) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}
