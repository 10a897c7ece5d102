//! What the HTTP benchmarks share: a release `trellis serve` they start and stop, a
//! minimal blocking HTTP/1.1 client for their set-up requests (so xtask needs no HTTP
//! library), and the few API calls every bench makes (log in, read a field).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::sys;

/// A free port on 127.0.0.1 (free when asked; the server binds it a moment later).
pub fn free_loopback_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("could not bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// `$CARGO_TARGET_DIR` (relative to the workspace root), else `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// `cargo build --release -p trellis-app --bin trellis`; returns the binary's path.
pub fn build_release_app(root: &Path, label: &str) -> Result<PathBuf> {
    let mut build = crate::app::cargo(root);
    build
        .args(["build", "--release", "-p", crate::app::APP_PACKAGE, "--bin"])
        .arg(crate::app::APP_BIN)
        .stdout(sys::to_stderr());
    say!("{label}: running `{}`", sys::describe(&build));
    sys::run(&mut build)?;
    let bin = target_dir(root).join("release").join(crate::app::APP_BIN);
    if !sys::is_executable(&bin) {
        bail!("the release build did not produce {}", bin.display());
    }
    Ok(bin)
}

/// A running `trellis serve`, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    /// The bench's name, for messages (`bench chat`).
    label: &'static str,
}

impl Server {
    /// Starts `cmd` (a `trellis serve`) with its output appended to `log`.
    pub fn start(
        label: &'static str,
        mut cmd: Command,
        addr: SocketAddr,
        log: &Path,
    ) -> Result<Self> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("could not open {}", log.display()))?;
        let err = file.try_clone()?;
        say!(
            "{label}: starting `trellis serve` on {addr} (log: {})",
            log.display()
        );
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .with_context(|| format!("could not start `{}`", sys::describe(&cmd)))?;
        Ok(Self {
            child,
            addr,
            log: log.to_owned(),
            label,
        })
    }

    /// Polls `/readyz` until it answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "`trellis serve` exited ({status}) before it was ready; last lines of {}:\n{}",
                    self.log.display(),
                    tail(&self.log, 20)
                );
            }
            if http_request(self.addr, "GET", "/readyz", None, None).is_ok_and(|r| r.status == 200)
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "`trellis serve` was not ready after {timeout:?}; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's process id, for CPU accounting.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks for a graceful shutdown, waits up to 10 s, then kills.
    pub fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        say!(
            "{}: `trellis serve` ignored SIGTERM for 10 s; killing it",
            self.label
        );
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            say!(
                "{}: could not stop `trellis serve` (pid {}): {err:#}",
                self.label,
                self.child.id()
            );
        }
    }
}

/// The last `n` lines of a file, for error messages.
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A response to one of the set-up requests.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// The JSON body if the status is one of `ok`, else an error naming `what`.
    pub fn json(self, ok: &[u16], what: &str) -> Result<Value> {
        if !ok.contains(&self.status) {
            bail!("{what}: HTTP {} {}", self.status, self.body);
        }
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.body)
            .with_context(|| format!("{what}: the response is not JSON: {}", self.body))
    }
}

/// The head of a request with `Connection: close` and an optional bearer token.
pub fn request_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    accept: &str,
) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: {accept}\r\n"
    );
    if let Some(token) = token {
        let _ = write!(head, "Authorization: Bearer {token}\r\n");
    }
    head
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Response> {
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut request = request_head(addr, method, path, token, "application/json");
    if body.is_some() {
        let _ = write!(
            request,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        );
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(payload.as_bytes());
    send_raw(addr, &bytes).with_context(|| format!("{method} {path}"))
}

/// Sends a complete request and reads the whole response.
pub fn send_raw(addr: SocketAddr, request: &[u8]) -> Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("could not connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Status and (de-chunked) body of a complete HTTP/1.1 response.
pub fn parse_response(raw: &[u8]) -> Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response: no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP response: no status")?;
    let chunked = lines.any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("malformed chunk header")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).context("malformed chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).context("truncated chunk")?);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

/// `POST /v1/auth/login`; the session JSON.
pub fn login(addr: SocketAddr, tenant: Option<&str>, email: &str, password: &str) -> Result<Value> {
    let mut body = json!({ "email": email, "password": password });
    if let Some(slug) = tenant {
        body["tenant"] = json!(slug);
    }
    http_request(addr, "POST", "/v1/auth/login", None, Some(&body))?
        .json(&[200], &format!("logging in as {email}"))
}

/// A string field of a JSON response, or an error naming what was asked.
pub fn str_field(value: &Value, field: &str, what: &str) -> Result<String> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{what}: no `{field}` in {value}"))
}

/// The superadmin `trellis seed` created with our password (`superadmin:   email / pw`),
/// `None` when it already existed.
pub fn new_superadmin(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("superadmin:")?;
        let (email, _) = rest.split_once(" / ")?;
        Some(email.trim().to_owned())
    })
}

/// The value at fraction `p` (0..=1) of sorted samples, by nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The machine's 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `(busy, total)` CPU ticks of the whole machine since boot.
pub fn machine_ticks() -> Result<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").context("could not read /proc/stat")?;
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Ok((total.saturating_sub(idle), total))
}

/// The share of all cores busy over `window`: what else runs on the machine.
pub fn machine_busy_over(window: Duration) -> Result<f64> {
    let before = machine_ticks()?;
    std::thread::sleep(window);
    let after = machine_ticks()?;
    Ok(share_pct(after.0 - before.0, after.1 - before.1))
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn share_pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `12345.6` as `12,346`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_responses_are_parsed_plain_and_chunked() -> Result<()> {
        let plain = parse_response(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}")?;
        assert_eq!((plain.status, plain.body.as_str()), (201, "{}"));
        let chunked = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n",
        )?;
        assert_eq!((chunked.status, chunked.body.as_str()), (200, "{\"a\":1}"));
        Ok(())
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile(&samples, 0.5) - 2.0).abs() < f64::EPSILON);
        assert!((percentile(&samples, 0.99) - 4.0).abs() < f64::EPSILON);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
