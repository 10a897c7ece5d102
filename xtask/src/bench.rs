//! `cargo xtask bench api`: HTTP load on loopback against a release build of
//! `trellis serve`, and pgbench running the SQL the list endpoint issues, in one run,
//! so that the endpoint can be compared with the database's own ceiling on the same
//! machine at the same moment. Figures, not assertions: nothing here fails because a
//! number is low (see `docs/benchmarks.md`).
//!
//! The run, in order:
//!
//! 1. `wrk` is found (as root on Debian it is installed with apt-get), the database is
//!    brought up ([`db::ensure_up`]) and — when the superuser URL is known, as it is for
//!    the local server — a scratch database `trellis_bench` is created afresh on the
//!    same server, so the bench never touches the development data.
//! 2. `trellis` is built in release mode, migrated and seeded (which creates the
//!    platform superadmin with a password we chose).
//! 3. `target/release/trellis serve` starts on a free loopback port with the default
//!    configuration; once `/readyz` answers, a dedicated tenant `bench-<random>` with
//!    `--users` users is created through the API and its admin logs in.
//! 4. After an unrecorded warm-up, `wrk --latency` loads `GET /v1/auth/me` with the
//!    admin's bearer token.
//! 5. `GET /v1/users?limit=20` and `pgbench -M prepared` running the list endpoint's
//!    unit of work (with as many clients as wrk has connections) take turns in
//!    `--rounds` rounds. On this machine the list's throughput moves between two
//!    levels for tens of seconds at a time while pgbench's stays put, so a ratio of one
//!    stretch of time with the next said more about when each ran than about the
//!    server. During the first list round `pg_stat_activity` is sampled to check that
//!    the pgbench script is still the SQL the adapter issues.
//! 6. With `--content`, more endpoints are loaded; then the server is stopped (also on
//!    any error: [`Server`] stops it when dropped).
//!
//! The results are printed as a table and written to `target/bench/api.json`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench_http::{
    Server, build_release_app, free_loopback_addr, http_request, login, machine_busy_over,
    machine_ticks, str_field, target_dir, thousands,
};
use crate::db::{self, ConnUrl};
use crate::{app, bench_content, sys};

/// Target from issue 2: `/v1/auth/me` requests per second on two cores.
const ME_TARGET_RPS: f64 = 20_000.0;
/// Target from issue 2: list endpoint req/s over pgbench tps of its SQL.
const LIST_RATIO_TARGET: f64 = 0.5;
/// The scratch database the bench creates on the local server.
const BENCH_DATABASE: &str = "trellis_bench";
/// At most this many samples of `pg_stat_activity` while the list runs; sampling
/// stops once both statements were seen, mostly within a few. With 20, one run in
/// eight never caught a connection on its opening and warned of a mismatch that was
/// not there.
const SQL_SAMPLES: usize = 60;
/// The shortest round of the users list and of pgbench, in seconds.
const MIN_ROUND_SECS: u32 = 5;
/// Page size the list endpoint is loaded with.
const LIST_LIMIT: u32 = 20;
/// The paths under load.
const ME_PATH: &str = "/v1/auth/me";
const LIST_PATH: &str = "/v1/users?limit=20";

/// What opens a read-only unit of work, `BEGIN` and its scope in one simple-protocol
/// message, with the tenant id as a literal where `$1` stands
/// (`crates/adapters/postgres/src/txn.rs`).
const OPEN_READ_SQL: &str = "BEGIN READ ONLY; SET LOCAL trellis.tenant_id = $1";
/// `UserRepo::list` without filters or cursor, as SeaORM renders it
/// (`crates/adapters/postgres/src/repo/users.rs`, `store::keyset`): `$1` is the tenant
/// id, `$2` the page size plus one. The bench checks it against `pg_stat_activity`.
const LIST_USERS_SQL: &str = r#"SELECT "users"."tenant_id", "users"."id", "users"."email", "users"."email_verified", "users"."name", "users"."username", "users"."avatar_url", "users"."role", "users"."tier", "users"."oauth_provider", "users"."oauth_subject", "users"."preferences", "users"."active", "users"."last_login_at", "users"."created_at", "users"."updated_at" FROM "users" WHERE "users"."tenant_id" = $1 AND "users"."deleted_at" IS NULL ORDER BY "users"."id" ASC LIMIT $2"#;

/// `cargo xtask bench api` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Seconds of recorded load per endpoint, and of pgbench.
    #[arg(long, default_value_t = 20)]
    pub duration: u32,
    /// Concurrent HTTP connections (wrk -c), also pgbench's clients (pgbench -c).
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// wrk threads (wrk -t). One is plenty on two cores: wrk is cheap per request, and
    /// every extra thread competes with the server and PostgreSQL.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// pgbench worker threads (pgbench -j).
    #[arg(long, default_value_t = 2)]
    pub pgbench_jobs: u32,
    /// Users in the bench tenant (including its admin).
    #[arg(long, default_value_t = 100)]
    pub users: u32,
    /// The users list and pgbench take turns in this many rounds, `--duration` split
    /// between them (at least 5 s each; fewer rounds when the duration is short), so
    /// the ratio compares the two over the same stretch of time rather than one
    /// stretch with the next.
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
    /// `trellis serve` processes sharing the port (`TRELLIS_REUSE_PORT`), each with the
    /// machine's cores divided among them as tokio worker threads (`TOKIO_WORKER_THREADS`,
    /// unless that is set).
    #[arg(long, default_value_t = 1)]
    pub processes: u32,
    /// Seconds of unrecorded warm-up per endpoint.
    #[arg(long, default_value_t = 3)]
    pub warmup: u32,
    /// Run this `trellis` binary instead of building one (to compare two builds).
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// Also load the admin's conversations list, a 20-message conversation and a
    /// collection's documents list, each reported as a ratio to the users list of the
    /// same run (`bench_content.rs`).
    #[arg(long)]
    pub content: bool,
}

/// `cargo xtask bench api`.
pub fn api(root: &Path, args: &ApiArgs) -> Result<ExitCode> {
    if args.duration == 0 || args.connections == 0 || args.threads == 0 {
        bail!("--duration, --connections and --threads must be at least 1");
    }
    if args.processes == 0 {
        bail!("--processes must be at least 1");
    }
    if args.threads > args.connections || args.pgbench_jobs > args.connections {
        bail!("--threads and --pgbench-jobs may not exceed --connections");
    }
    let wrk = ensure_wrk()?;
    let env = db::ensure_up(root)?;
    let pg_bin = env
        .pg_bin
        .clone()
        .context("pgbench is needed: set TRELLIS_PG_BIN to the PostgreSQL bin directory")?;
    let pgbench = pg_bin.join("pgbench");
    if !sys::is_executable(&pgbench) {
        bail!("{} is not an executable pgbench", pgbench.display());
    }
    let psql = pg_bin.join("psql");
    let bench_env = match db::scratch_database(&env, BENCH_DATABASE)? {
        Some(scratch) => {
            say!("bench: using a fresh scratch database `{BENCH_DATABASE}`");
            scratch
        }
        None => {
            say!("bench: no superuser URL known; using the app's database as it is");
            env
        }
    };
    let out_dir = target_dir(root).join("bench");
    fs::create_dir_all(&out_dir)
        .with_context(|| format!("could not create {}", out_dir.display()))?;

    let trellis = match &args.server_bin {
        Some(bin) => {
            fs::canonicalize(bin).with_context(|| format!("--server-bin {}", bin.display()))?
        }
        None => build_release_app(root, "bench")?,
    };
    let secrets = app::dev_secrets(root)?;
    let app_cmd = |subcommand: &str| {
        let mut cmd = Command::new(&trellis);
        cmd.arg(subcommand).current_dir(root);
        bench_env.apply(&mut cmd);
        for (key, value) in &secrets {
            cmd.env(key, value);
        }
        cmd
    };
    say!("bench: running `trellis migrate`");
    sys::run(app_cmd("migrate").stdout(sys::to_stderr()))?;
    let password = sys::random_hex(12)?;
    say!("bench: running `trellis seed`");
    let seeded = sys::run_captured(app_cmd("seed").env("TRELLIS_SEED_PASSWORD", &password))?;
    let seed = SeedReport::parse(&String::from_utf8_lossy(&seeded.stdout));

    let addr = free_loopback_addr()?;
    let log_path = out_dir.join("server.log");
    // This run's servers append to it together; an earlier run's lines would read as
    // this one's.
    fs::write(&log_path, b"").with_context(|| format!("could not empty {}", log_path.display()))?;
    let mut servers = Vec::new();
    for _ in 0..args.processes {
        let mut serve = app_cmd("serve");
        serve.env("TRELLIS_BIND", addr.to_string());
        if args.processes > 1 {
            serve.env("TRELLIS_REUSE_PORT", "true");
            if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
                serve.env(
                    "TOKIO_WORKER_THREADS",
                    worker_threads(args.processes).to_string(),
                );
            }
        }
        let mut server = Server::start("bench", serve, addr, &log_path)?;
        // Each one is ready before the next starts: /readyz reaches whichever listens.
        server.wait_ready(Duration::from_secs(60))?;
        servers.push(server);
    }
    let tenant = setup_tenant(addr, &seed, &password, args.users)?;
    check_endpoints(addr, &tenant.token)?;

    let clk_tck = clock_ticks_per_second();
    let background = machine_busy_over(Duration::from_secs(2))?;
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    say!(
        "bench: machine before load: {:.0}% CPU busy over 2 s, load average {}",
        background,
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let load = Load {
        wrk: &wrk,
        addr,
        token: &tenant.token,
        args,
        server_pids: servers.iter().map(Server::pid).collect(),
        clk_tck,
    };
    load.warm_up(ME_PATH)?;
    let me = load.run(ME_PATH, args.duration, None)?;
    load.warm_up(LIST_PATH)?;
    let sampler = SqlSampler {
        psql: &psql,
        url: ConnUrl::parse(&bench_env.database_url)?,
    };
    if !is_uuid(&tenant.id) {
        bail!("the bench tenant's id {:?} is not a UUID", tenant.id);
    }
    let script = pgbench_script(&tenant.id);
    let script_path = out_dir.join("list_users.sql");
    fs::write(&script_path, &script)
        .with_context(|| format!("could not write {}", script_path.display()))?;
    let pgbench_url = ConnUrl::parse(&bench_env.database_url)?;
    let (rounds, round_secs) = rounds(args);
    say!("bench: the users list and pgbench take turns, {rounds} rounds of {round_secs} s each");
    let mut list_rounds = Vec::new();
    let mut pg_rounds = Vec::new();
    for round in 0..rounds {
        // pg_stat_activity is sampled once; the SQL does not change between rounds.
        let sampler = (round == 0).then_some(&sampler);
        list_rounds.push(load.run(LIST_PATH, round_secs, sampler)?);
        pg_rounds.push(run_pgbench(
            &pgbench,
            &pgbench_url,
            &script_path,
            &tenant.id,
            args,
            round_secs,
            clk_tck,
        )?);
    }
    let list = Run::merged(list_rounds).context("the users list ran no rounds")?;
    let pg = PgFigures::merged(pg_rounds);
    let mut content = Vec::new();
    if args.content {
        let paths = bench_content::seed(addr, &tenant.token, &tenant.id, &psql, &sampler.url)?;
        for path in paths.all() {
            load.warm_up(path)?;
            content.push(load.run(path, args.duration, None)?);
        }
    }
    for server in &mut servers {
        server.stop()?;
    }

    let report = Report {
        args,
        me,
        list,
        content,
        pg,
        tenant: &tenant,
        background_busy_pct: background,
        loadavg: loadavg.trim().to_owned(),
        scratch: bench_env.database_url.ends_with(BENCH_DATABASE),
    };
    let table = report.table();
    print!("{table}");
    let json_path = out_dir.join("api.json");
    let json = serde_json::to_string_pretty(&report.json(root, &script))?;
    fs::write(&json_path, format!("{json}\n"))
        .with_context(|| format!("could not write {}", json_path.display()))?;
    say!("bench: wrote {}", json_path.display());
    if report.runs().any(|r| r.wrk.non_2xx > 0) || report.pg.failed > 0 {
        say!("bench: some requests or transactions failed; the figures are not valid");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `wrk` on PATH; installed from Debian when we are root and apt-get exists.
fn ensure_wrk() -> Result<PathBuf> {
    if let Some(wrk) = sys::find_program("wrk") {
        return Ok(wrk);
    }
    let apt = sys::find_program("apt-get");
    match apt {
        Some(apt) if sys::is_root()? => {
            say!("bench: wrk not found; installing Debian's package (apt-get install -y wrk)");
            let install = || {
                sys::run(
                    Command::new(&apt)
                        .args(["install", "-y", "-q", "--no-install-recommends", "wrk"])
                        .env("DEBIAN_FRONTEND", "noninteractive")
                        .stdout(sys::to_stderr()),
                )
            };
            if install().is_err() {
                sys::run(
                    Command::new(&apt)
                        .args(["update", "-q"])
                        .stdout(sys::to_stderr()),
                )?;
                install()?;
            }
            sys::require_program("wrk")
        }
        _ => bail!(
            "`wrk` (the HTTP load generator) is not installed. On Debian or Ubuntu run \
             `sudo apt-get install -y wrk`, then `cargo xtask bench api` again."
        ),
    }
}

// ----- the bench tenant ------------------------------------------------------------------

/// What `trellis seed` printed.
#[derive(Debug, Default, PartialEq, Eq)]
struct SeedReport {
    demo_tenant: Option<String>,
    demo_admin: Option<String>,
    /// The superadmin's email when seeding created it (with our password).
    new_superadmin: Option<String>,
}

impl SeedReport {
    /// Reads `demo tenant:  demo`, `tenant admin: email / password` and
    /// `superadmin:   email / password` (or `email (already existed; …)`).
    fn parse(stdout: &str) -> Self {
        let mut report = Self::default();
        for line in stdout.lines() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("demo tenant:") {
                report.demo_tenant = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("tenant admin:") {
                report.demo_admin = v.split(" / ").next().map(|e| e.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("superadmin:")
                && let Some((email, _)) = v.split_once(" / ")
            {
                report.new_superadmin = Some(email.trim().to_owned());
            }
        }
        report
    }
}

/// The tenant under load and its admin's access token.
#[derive(Debug)]
struct Tenant {
    id: String,
    slug: String,
    token: String,
    users: u64,
    /// `dedicated` (a new `bench-…` tenant) or `demo` (the seeded demo tenant).
    kind: &'static str,
}

/// A new tenant `bench-<random>` created by the superadmin seeding just made, with
/// `users` users in all; or, when the superadmin already existed (its password is
/// unknown), the demo tenant, whose admin seeding gave our password, topped up to
/// `users` users.
fn setup_tenant(addr: SocketAddr, seed: &SeedReport, password: &str, users: u32) -> Result<Tenant> {
    let (slug, admin_email, kind) = match &seed.new_superadmin {
        Some(superadmin) => {
            let session = login(addr, None, superadmin, password)?;
            let token = str_field(&session, "access_token", "superadmin login")?;
            let slug = format!("bench-{}", sys::random_hex(4)?);
            let admin_email = format!("admin@{slug}.example.com");
            let body = json!({
                "name": format!("Bench {slug}"),
                "slug": slug,
                "admin": { "email": admin_email, "name": "Bench Admin", "password": password },
            });
            http_request(addr, "POST", "/v1/tenants", Some(&token), Some(&body))?
                .json(&[201], "creating the bench tenant")?;
            say!("bench: created tenant {slug}");
            (slug, admin_email, "dedicated")
        }
        None => {
            let slug = seed.demo_tenant.clone().context(
                "`trellis seed` printed no demo tenant and no new superadmin; cannot set up a tenant",
            )?;
            let admin = seed
                .demo_admin
                .clone()
                .context("`trellis seed` printed no tenant admin")?;
            say!(
                "bench: the superadmin already existed (password unknown); using the demo tenant `{slug}`"
            );
            (slug, admin, "demo")
        }
    };
    let session = login(addr, Some(&slug), &admin_email, password)?;
    let token = str_field(&session, "access_token", "tenant admin login")?;
    let id = str_field(&session, "tenant_id", "tenant admin login")?;

    // Users without a password: nothing to hash, so setup takes a second, not minutes.
    let existing = count_users(addr, &token)?;
    let mut created = 0u64;
    let mut n = 0u64;
    while existing + created < u64::from(users) {
        n += 1;
        if n > 10 * u64::from(users) {
            bail!("could not create {users} users in {slug}");
        }
        let body = json!({
            "email": format!("user-{n:04}@{slug}.bench.example.com"),
            "name": format!("Bench User {n}"),
            "role": "user",
        });
        let response = http_request(addr, "POST", "/v1/users", Some(&token), Some(&body))?;
        match response.status {
            201 => created += 1,
            409 => {}
            _ => {
                response.json(&[201], "creating a bench user")?;
            }
        }
    }
    let users = count_users(addr, &token)?;
    say!("bench: tenant {slug} ({id}) has {users} users");
    Ok(Tenant {
        id,
        slug,
        token,
        users,
        kind,
    })
}

/// Counts the tenant's users by paging through `/v1/users`.
fn count_users(addr: SocketAddr, token: &str) -> Result<u64> {
    let mut count = 0u64;
    let mut path = "/v1/users?limit=100".to_owned();
    loop {
        let page =
            http_request(addr, "GET", &path, Some(token), None)?.json(&[200], "listing users")?;
        count += page["items"]
            .as_array()
            .map_or(0, |items| items.len() as u64);
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/users?limit=100&cursor={cursor}"),
            None => return Ok(count),
        }
    }
}

/// One request to each endpoint: both must answer 200 before load makes sense.
fn check_endpoints(addr: SocketAddr, token: &str) -> Result<()> {
    http_request(addr, "GET", ME_PATH, Some(token), None)?.json(&[200], ME_PATH)?;
    let page = http_request(addr, "GET", LIST_PATH, Some(token), None)?.json(&[200], LIST_PATH)?;
    let items = page["items"].as_array().map_or(0, Vec::len);
    if items != LIST_LIMIT as usize {
        bail!("{LIST_PATH} returned {items} users, expected {LIST_LIMIT}: raise --users");
    }
    Ok(())
}

// ----- load ------------------------------------------------------------------------------

/// What wrk measured.
#[derive(Debug, Clone, Default, PartialEq)]
struct WrkFigures {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
}

/// One recorded endpoint run.
#[derive(Debug)]
struct Run {
    path: String,
    wrk: WrkFigures,
    /// Server CPU time (user + system) per request, in microseconds.
    server_cpu_us_per_req: f64,
    /// PostgreSQL's CPU time per request (`None` when the database is not local).
    postgres_cpu_us_per_req: Option<f64>,
    /// wrk's CPU time per request.
    client_cpu_us_per_req: Option<f64>,
    /// Share of all cores busy during the run (server, PostgreSQL, wrk, anything else).
    machine_busy_pct: f64,
    /// `Some(true)` when the sampled SQL matched the pgbench script (list run only).
    sql_matches: Option<bool>,
    sampled_sql: Vec<String>,
    /// Each round's req/s, in order (one for a run that was not split).
    rounds_per_sec: Vec<f64>,
}

impl Run {
    /// One run of the rounds of the same path: requests summed, CPU per request weighted
    /// by each round's requests, req/s averaged (the rounds are equally long), p50 the
    /// median round's and p99 the worst round's. `None` without rounds.
    fn merged(rounds: Vec<Run>) -> Option<Run> {
        let requests = |r: &Run| r.wrk.requests;
        let server = weighted_mean(&rounds, |r| Some(r.server_cpu_us_per_req), requests);
        let postgres = weighted_mean(&rounds, |r| r.postgres_cpu_us_per_req, requests);
        let client = weighted_mean(&rounds, |r| r.client_cpu_us_per_req, requests);
        let busy: Vec<f64> = rounds.iter().map(|r| r.machine_busy_pct).collect();
        let mut p50s: Vec<f64> = rounds.iter().map(|r| r.wrk.p50_ms).collect();
        p50s.sort_by(f64::total_cmp);
        let mut rounds = rounds.into_iter();
        let mut run = rounds.next()?;
        for r in rounds {
            run.wrk.requests += r.wrk.requests;
            run.wrk.non_2xx += r.wrk.non_2xx;
            run.wrk.socket_errors += r.wrk.socket_errors;
            run.wrk.p99_ms = run.wrk.p99_ms.max(r.wrk.p99_ms);
            run.rounds_per_sec.extend(r.rounds_per_sec);
        }
        run.wrk.requests_per_sec = mean(&run.rounds_per_sec);
        run.wrk.p50_ms = p50s[p50s.len() / 2];
        run.server_cpu_us_per_req = server.unwrap_or(0.0);
        run.postgres_cpu_us_per_req = postgres;
        run.client_cpu_us_per_req = client;
        run.machine_busy_pct = mean(&busy);
        Some(run)
    }
}

/// The mean of `value` over `items` weighted by `weight` (requests, transactions):
/// `None` when any item lacks the value or nothing has weight.
fn weighted_mean<T>(
    items: &[T],
    value: impl Fn(&T) -> Option<f64>,
    weight: impl Fn(&T) -> u64,
) -> Option<f64> {
    let total: u64 = items.iter().map(&weight).sum();
    let sum = items.iter().try_fold(0.0, |sum, item| {
        Some(sum + value(item)? * weight(item) as f64)
    })?;
    (total > 0).then(|| sum / total as f64)
}

/// Tokio worker threads for each of `processes` servers: the cores shared out, at
/// least one each.
fn worker_threads(processes: u32) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / processes.max(1) as usize).max(1)
}

/// The arithmetic mean, 0 of nothing.
fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// How many rounds the users list and pgbench take turns in, and the seconds of each:
/// `--rounds`, but no round shorter than [`MIN_ROUND_SECS`] (pgbench's Postgres CPU is
/// sampled a second in from either end).
fn rounds(args: &ApiArgs) -> (u32, u32) {
    let rounds = args
        .rounds
        .clamp(1, (args.duration / MIN_ROUND_SECS).max(1));
    (rounds, (args.duration / rounds).max(1))
}

struct Load<'a> {
    wrk: &'a Path,
    addr: SocketAddr,
    token: &'a str,
    args: &'a ApiArgs,
    /// Every `trellis serve` process (`--processes`), whose CPU is counted together.
    server_pids: Vec<u32>,
    clk_tck: f64,
}

impl Load<'_> {
    fn command(&self, path: &str, seconds: u32) -> Command {
        let mut cmd = Command::new(self.wrk);
        cmd.arg(format!("-t{}", self.args.threads))
            .arg(format!("-c{}", self.args.connections))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.token))
            .arg(format!("http://{}{path}", self.addr))
            .stdin(Stdio::null());
        cmd
    }

    /// CPU ticks of all the server processes.
    fn server_ticks(&self) -> Result<u64> {
        self.server_pids.iter().map(|pid| process_ticks(*pid)).sum()
    }

    fn warm_up(&self, path: &str) -> Result<()> {
        if self.args.warmup == 0 {
            return Ok(());
        }
        say!("bench: warming up {path} for {} s", self.args.warmup);
        sys::run_captured(&mut self.command(path, self.args.warmup))?;
        Ok(())
    }

    fn run(&self, path: &str, seconds: u32, sampler: Option<&SqlSampler<'_>>) -> Result<Run> {
        let mut cmd = self.command(path, seconds);
        // The token is in the arguments: describe the command without it.
        say!(
            "bench: wrk -t{} -c{} -d{seconds}s --latency -H 'Authorization: Bearer …' http://{}{path}",
            self.args.threads,
            self.args.connections,
            self.addr
        );
        let cpu_before = self.server_ticks()?;
        let machine_before = machine_ticks()?;
        let children_before = children_ticks()?;
        let postgres_before = postgres_ticks();
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("could not start wrk")?;
        let mut sampled_sql = Vec::new();
        // psql is a child too: its CPU is not wrk's.
        let mut sampler_ticks = 0;
        if let Some(sampler) = sampler {
            std::thread::sleep(Duration::from_secs(u64::from(seconds) / 2));
            let before = children_ticks()?;
            // A pipelined connection shows its last statement, mostly the `ROLLBACK`:
            // a few samples are pooled until both statements have been seen (which
            // shows what was sent, not which of the app's pools sent it).
            for _ in 0..SQL_SAMPLES {
                match sampler.sample() {
                    Ok(sampled) => sampled_sql.extend(sampled),
                    Err(err) => {
                        say!("bench: could not sample pg_stat_activity: {err:#}");
                        break;
                    }
                }
                sampled_sql.sort();
                sampled_sql.dedup();
                if sql_matches(&sampled_sql) {
                    break;
                }
            }
            sampler_ticks = children_ticks()?.saturating_sub(before);
        }
        let output = child.wait_with_output()?;
        let cpu_after = self.server_ticks()?;
        let machine_after = machine_ticks()?;
        let client_ticks = children_ticks()?
            .saturating_sub(children_before)
            .saturating_sub(sampler_ticks);
        let postgres_ticks = postgres_ticks_between(&postgres_before, &postgres_ticks());
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "wrk failed ({}):\n{stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let wrk =
            parse_wrk(&stdout).with_context(|| format!("unexpected wrk output:\n{stdout}"))?;
        let cpu_secs = (cpu_after - cpu_before) as f64 / self.clk_tck;
        let (busy, total) = (
            machine_after.0 - machine_before.0,
            machine_after.1 - machine_before.1,
        );
        let sql_matches = sampler.map(|_| sql_matches(&sampled_sql));
        Ok(Run {
            path: path.to_owned(),
            server_cpu_us_per_req: if wrk.requests == 0 {
                0.0
            } else {
                cpu_secs * 1e6 / wrk.requests as f64
            },
            postgres_cpu_us_per_req: us_per(postgres_ticks, self.clk_tck, wrk.requests as f64),
            client_cpu_us_per_req: us_per(client_ticks, self.clk_tck, wrk.requests as f64),
            machine_busy_pct: if total == 0 {
                0.0
            } else {
                busy as f64 * 100.0 / total as f64
            },
            rounds_per_sec: vec![wrk.requests_per_sec],
            wrk,
            sql_matches,
            sampled_sql,
        })
    }
}

/// Parses `wrk --latency` output.
fn parse_wrk(out: &str) -> Result<WrkFigures> {
    let mut figures = WrkFigures::default();
    let (mut rps, mut p50, mut p99) = (None, None, None);
    for line in out.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => rps = v.parse().ok(),
            (Some("50%"), Some(v)) => p50 = parse_duration_ms(v),
            (Some("99%"), Some(v)) => p99 = parse_duration_ms(v),
            (Some(n), Some("requests")) => figures.requests = n.parse().unwrap_or(0),
            (Some("Non-2xx"), _) => {
                figures.non_2xx = line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            (Some("Socket"), Some("errors:")) => {
                figures.socket_errors = line
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    figures.requests_per_sec = rps.context("no Requests/sec line")?;
    figures.p50_ms = p50.context("no 50% latency line (was --latency given?)")?;
    figures.p99_ms = p99.context("no 99% latency line")?;
    Ok(figures)
}

/// `850.00us`, `2.14ms`, `1.02s`, `1.50m` in milliseconds.
fn parse_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return None,
    };
    Some(number * factor)
}

// ----- CPU accounting --------------------------------------------------------------------

/// `getconf CLK_TCK`, the unit of `/proc` CPU times (100 almost everywhere).
fn clock_ticks_per_second() -> f64 {
    sys::stdout_of(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100.0)
}

/// A process's name and the numbered fields of its `/proc/<pid>/stat` from field 3 on
/// (the name, field 2, may contain spaces, so it is cut out by its parentheses).
fn stat_of(pid: &str) -> Option<(String, Vec<u64>)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    // State (field 3) is a letter; keep the numbering by reading it as 0.
    let fields = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    Some((name, fields))
}

/// Field `n` (1-based, as in `proc(5)`) of what [`stat_of`] returns.
fn stat_field(fields: &[u64], n: usize) -> u64 {
    n.checked_sub(3)
        .and_then(|i| fields.get(i))
        .copied()
        .unwrap_or(0)
}

/// User + system CPU ticks (utime + stime) in what [`stat_of`] returns.
fn cpu_ticks(fields: &[u64]) -> u64 {
    stat_field(fields, 14) + stat_field(fields, 15)
}

/// User + system CPU ticks of one process.
fn process_ticks(pid: u32) -> Result<u64> {
    let (_, fields) =
        stat_of(&pid.to_string()).with_context(|| format!("could not read /proc/{pid}/stat"))?;
    Ok(cpu_ticks(&fields))
}

/// User + system CPU ticks of this process's children that have been waited for: what
/// `wrk` and `pgbench` used, measured around each run.
fn children_ticks() -> Result<u64> {
    let (_, fields) = stat_of("self").context("could not read /proc/self/stat")?;
    Ok(stat_field(&fields, 16) + stat_field(&fields, 17))
}

/// CPU ticks of every PostgreSQL process on this machine, by pid. Empty when the
/// database runs elsewhere.
fn postgres_ticks() -> HashMap<u32, u64> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(|entry| {
        let name = entry.ok()?.file_name().into_string().ok()?;
        let pid: u32 = name.parse().ok()?;
        let (comm, fields) = stat_of(&name)?;
        (comm == "postgres").then(|| (pid, cpu_ticks(&fields)))
    })
    .collect()
}

/// Ticks that the PostgreSQL processes running at both snapshots spent in between
/// (the server's pooled connections and pgbench's stay open for the whole run).
fn postgres_ticks_between(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
    after
        .iter()
        .filter_map(|(pid, t)| before.get(pid).map(|b| t.saturating_sub(*b)))
        .sum()
}

/// Microseconds of CPU per unit of work: `ticks` over `units`, `None` without either.
fn us_per(ticks: u64, clk_tck: f64, units: f64) -> Option<f64> {
    (ticks > 0 && units > 0.0).then(|| ticks as f64 / clk_tck * 1e6 / units)
}

// ----- the SQL and pgbench ---------------------------------------------------------------

/// Reads the statements the app's connections are running from `pg_stat_activity`.
struct SqlSampler<'a> {
    psql: &'a Path,
    url: ConnUrl,
}

impl SqlSampler<'_> {
    fn sample(&self) -> Result<Vec<String>> {
        let mut cmd = Command::new(self.psql);
        cmd.args(["-X", "-A", "-t", "-c"]).arg(
            "SELECT DISTINCT query FROM pg_stat_activity \
             WHERE datname = current_database() AND usename = current_user \
             AND pid <> pg_backend_pid() ORDER BY 1",
        );
        self.url.apply(&mut cmd);
        let out = sys::stdout_of(&mut cmd)?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}

/// Whether both statements of the pgbench script were seen (whitespace-normalised).
fn sql_matches(sampled: &[String]) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let seen: Vec<String> = sampled.iter().map(|s| norm(s)).collect();
    let (before, after) = OPEN_READ_SQL
        .split_once("$1")
        .unwrap_or((OPEN_READ_SQL, ""));
    let opened = seen.iter().any(|s| {
        s.strip_prefix(before)
            .and_then(|rest| rest.strip_suffix(after))
            .and_then(|literal| literal.strip_prefix('\''))
            .and_then(|literal| literal.strip_suffix('\''))
            .is_some_and(is_uuid)
    });
    opened && seen.contains(&norm(LIST_USERS_SQL))
}

/// Whether `s` is a hyphenated UUID (what a tenant id literal must be).
pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The list endpoint's unit of work as a pgbench script: the adapter's statements with
/// the `SELECT`'s `$1`/`$2` turned into pgbench variables, which `-M prepared` sends as
/// parameters. `SET` takes no parameters, so the tenant id (a UUID, checked by the
/// caller) goes into it as the literal the adapter sends too.
///
/// The adapter sends the unit as one pipeline (`crates/adapters/postgres/src/pipelined.rs`):
/// `BEGIN` and the scope in one simple-protocol message, the prepared `SELECT`, and a
/// simple `ROLLBACK`, each ending in its own sync point, all in one write. The script
/// has the same sync points in one pipeline (a sync after the opening, after the
/// `SELECT` and at its end); prepared mode sends `BEGIN`, the `SET` and the `ROLLBACK`
/// as prepared statements, which Postgres does not parse again, so if anything this
/// side is the cheaper. `\syncpipeline` needs pgbench 17 or later (the bench uses the
/// one beside the local server, 18).
fn pgbench_script(tenant_id: &str) -> String {
    let (begin, set) = OPEN_READ_SQL
        .split_once("; ")
        .unwrap_or(("BEGIN READ ONLY", OPEN_READ_SQL));
    let set = set.replace("$1", &format!("'{tenant_id}'"));
    let list = LIST_USERS_SQL
        .replace("$1", ":tenant")
        .replace("$2", ":limit");
    format!(
        "\\startpipeline\n{begin};\n{set};\n\\syncpipeline\n{list};\n\\syncpipeline\nROLLBACK;\n\\endpipeline\n"
    )
}

/// What pgbench measured.
#[derive(Debug, Clone, Default, PartialEq)]
struct PgFigures {
    tps: f64,
    latency_avg_ms: f64,
    transactions: u64,
    failed: u64,
    /// PostgreSQL's CPU time per transaction, sampled inside the run (`None` when the
    /// database is not local or the run is too short to sample).
    postgres_cpu_us_per_txn: Option<f64>,
    /// pgbench's own CPU time per transaction.
    client_cpu_us_per_txn: Option<f64>,
    /// Each round's tps, in order.
    rounds_tps: Vec<f64>,
}

impl PgFigures {
    /// The rounds as one run, as [`Run::merged`] does for wrk: transactions summed,
    /// tps averaged over the equally long rounds, latency and CPU weighted by each
    /// round's transactions.
    fn merged(rounds: Vec<PgFigures>) -> PgFigures {
        let transactions = |r: &PgFigures| r.transactions;
        let rounds_tps: Vec<f64> = rounds.iter().map(|r| r.tps).collect();
        PgFigures {
            tps: mean(&rounds_tps),
            latency_avg_ms: weighted_mean(&rounds, |r| Some(r.latency_avg_ms), transactions)
                .unwrap_or(0.0),
            transactions: rounds.iter().map(transactions).sum(),
            failed: rounds.iter().map(|r| r.failed).sum(),
            postgres_cpu_us_per_txn: weighted_mean(
                &rounds,
                |r| r.postgres_cpu_us_per_txn,
                transactions,
            ),
            client_cpu_us_per_txn: weighted_mean(
                &rounds,
                |r| r.client_cpu_us_per_txn,
                transactions,
            ),
            rounds_tps,
        }
    }
}

fn run_pgbench(
    pgbench: &Path,
    url: &ConnUrl,
    script: &Path,
    tenant_id: &str,
    args: &ApiArgs,
    seconds: u32,
    clk_tck: f64,
) -> Result<PgFigures> {
    let mut cmd = Command::new(pgbench);
    cmd.args(["-n", "-M", "prepared"])
        .arg(format!("-T{seconds}"))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-j{}", args.pgbench_jobs))
        .arg("-D")
        .arg(format!("tenant={tenant_id}"))
        .arg("-D")
        .arg(format!("limit={}", LIST_LIMIT + 1))
        .arg("-f")
        .arg(script);
    url.apply(&mut cmd);
    say!("bench: running `{}`", sys::describe(&cmd));
    let children_before = children_ticks()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start pgbench")?;
    // pgbench's server processes start with it and end with it, so PostgreSQL's CPU is
    // sampled inside the run, a second after the start and a second before the end.
    let window = seconds.saturating_sub(2);
    let postgres = if window >= 2 {
        std::thread::sleep(Duration::from_secs(1));
        let started = std::time::Instant::now();
        let before = postgres_ticks();
        std::thread::sleep(Duration::from_secs(u64::from(window)));
        let ticks = postgres_ticks_between(&before, &postgres_ticks());
        Some((ticks, started.elapsed().as_secs_f64()))
    } else {
        None
    };
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut figures =
        parse_pgbench(&stdout).with_context(|| format!("unexpected pgbench output:\n{stdout}"))?;
    figures.rounds_tps = vec![figures.tps];
    let client_ticks = children_ticks()?.saturating_sub(children_before);
    figures.client_cpu_us_per_txn = us_per(client_ticks, clk_tck, figures.transactions as f64);
    figures.postgres_cpu_us_per_txn =
        postgres.and_then(|(ticks, secs)| us_per(ticks, clk_tck, figures.tps * secs));
    Ok(figures)
}

/// Parses pgbench's summary.
fn parse_pgbench(out: &str) -> Result<PgFigures> {
    let mut figures = PgFigures::default();
    let mut tps = None;
    let mut latency = None;
    for line in out.lines().map(str::trim) {
        let value = |prefix: &str| -> Option<String> {
            line.strip_prefix(prefix)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        };
        if let Some(v) = value("tps =") {
            tps = v.parse().ok();
        } else if let Some(v) = value("latency average =") {
            latency = v.parse().ok();
        } else if let Some(v) = value("number of transactions actually processed:") {
            figures.transactions = v
                .split('/')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(v) = value("number of failed transactions:") {
            figures.failed = v.parse().unwrap_or(0);
        }
    }
    figures.tps = tps.context("no `tps =` line")?;
    figures.latency_avg_ms = latency.context("no `latency average =` line")?;
    Ok(figures)
}

// ----- the report ------------------------------------------------------------------------

struct Report<'a> {
    args: &'a ApiArgs,
    me: Run,
    list: Run,
    /// `--content`: conversations, messages, documents.
    content: Vec<Run>,
    pg: PgFigures,
    tenant: &'a Tenant,
    background_busy_pct: f64,
    loadavg: String,
    scratch: bool,
}

/// See [`Report::server_budget_us`]: `pgbench` is the machine's CPU per pgbench
/// transaction, `others` what Postgres and wrk spend per list request.
fn server_budget_us(pgbench: f64, others: f64) -> f64 {
    (pgbench / LIST_RATIO_TARGET - others).max(0.0)
}

/// A path with its UUIDs cut to their first eight digits, to keep the table narrow.
fn short_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while !rest.is_empty() {
        if rest.len() >= 36 && rest.is_char_boundary(36) && is_uuid(&rest[..36]) {
            out.push_str(&rest[..8]);
            out.push('…');
            rest = &rest[36..];
        } else {
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

impl Report<'_> {
    /// Every endpoint run, in the order they ran.
    fn runs(&self) -> impl Iterator<Item = &Run> {
        [&self.me, &self.list].into_iter().chain(&self.content)
    }

    /// An endpoint's req/s over the users list's, in the same run.
    fn over_list(&self, run: &Run) -> f64 {
        if self.list.wrk.requests_per_sec > 0.0 {
            run.wrk.requests_per_sec / self.list.wrk.requests_per_sec
        } else {
            0.0
        }
    }

    /// The users list's req/s over pgbench's tps in each round, in order.
    fn list_ratio_by_round(&self) -> Vec<f64> {
        self.list
            .rounds_per_sec
            .iter()
            .zip(&self.pg.rounds_tps)
            .map(|(list, pg)| if *pg > 0.0 { list / pg } else { 0.0 })
            .collect()
    }

    fn list_ratio(&self) -> f64 {
        if self.pg.tps > 0.0 {
            self.list.wrk.requests_per_sec / self.pg.tps
        } else {
            0.0
        }
    }

    /// The server CPU per list request at which the list would reach the ratio target,
    /// if both runs keep the machine's cores busy: the list may then cost the machine
    /// `1 / target` times what a pgbench transaction does, and Postgres and wrk take
    /// their share of that first.
    fn server_budget_us(&self) -> Option<f64> {
        Some(server_budget_us(
            self.pg.postgres_cpu_us_per_txn? + self.pg.client_cpu_us_per_txn?,
            self.list.postgres_cpu_us_per_req? + self.list.client_cpu_us_per_req?,
        ))
    }

    fn me_ratio(&self) -> f64 {
        self.me.wrk.requests_per_sec / ME_TARGET_RPS
    }

    fn table(&self) -> String {
        let mut out = String::new();
        let a = self.args;
        let (rounds, secs) = rounds(a);
        let _ = writeln!(
            out,
            "\nAPI benchmark: wrk -t{} -c{} -d{}s --latency on loopback, pgbench -M prepared -c{} -j{} -T{secs}, {} CPUs",
            a.threads,
            a.connections,
            a.duration,
            a.connections,
            a.pgbench_jobs,
            std::thread::available_parallelism().map_or(0, usize::from),
        );
        let _ = writeln!(
            out,
            "the users list and pgbench took turns: {rounds} rounds of {secs} s each (p99 is the worst round's)"
        );
        match sys::env_nonempty("TRELLIS_RUNTIME") {
            Some(runtime) => {
                let _ = writeln!(out, "the server ran with TRELLIS_RUNTIME={runtime}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "the server ran with its default runtime (TRELLIS_RUNTIME unset: per-core since session 22)"
                );
            }
        }
        if a.processes > 1 {
            let threads = std::env::var("TOKIO_WORKER_THREADS")
                .unwrap_or_else(|_| worker_threads(a.processes).to_string());
            let _ = writeln!(
                out,
                "{} `trellis serve` processes sharing the port, {threads} worker thread(s) each; server CPU is theirs together",
                a.processes
            );
        }
        let _ = writeln!(
            out,
            "tenant {} ({} users); machine before load: {:.0}% busy, load average {}\n",
            self.tenant.slug,
            self.tenant.users,
            self.background_busy_pct,
            self.loadavg
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        let w = self
            .runs()
            .map(|r| short_path(&r.path).chars().count() + 4)
            .max()
            .unwrap_or(0)
            .max(30);
        let _ = writeln!(
            out,
            "{:<w$} {:>9} {:>9} {:>9} {:>14} {:>10} {:>9}",
            "", "req/s", "p50 ms", "p99 ms", "server CPU/req", "CPU busy", "/ users"
        );
        for run in self.runs() {
            let _ = writeln!(
                out,
                "{:<w$} {:>9} {:>9.2} {:>9.2} {:>11.0} µs {:>9.0}% {:>9.2}",
                format!("GET {}", short_path(&run.path)),
                thousands(run.wrk.requests_per_sec),
                run.wrk.p50_ms,
                run.wrk.p99_ms,
                run.server_cpu_us_per_req,
                run.machine_busy_pct,
                self.over_list(run)
            );
        }
        let _ = writeln!(
            out,
            "{:<30} {:>9} {:>9} {:>9}",
            "pgbench: list SQL (tps)",
            thousands(self.pg.tps),
            "",
            format!("avg {:.2}", self.pg.latency_avg_ms)
        );
        let _ = writeln!(out);
        let us = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0} µs"));
        let cpu_rows = [
            [
                "CPU per request / transaction".to_owned(),
                "server".to_owned(),
                "Postgres".to_owned(),
                "load generator".to_owned(),
            ],
            [
                format!("GET {}", self.list.path),
                us(Some(self.list.server_cpu_us_per_req)),
                us(self.list.postgres_cpu_us_per_req),
                format!("{} (wrk)", us(self.list.client_cpu_us_per_req)),
            ],
            [
                "pgbench: list SQL".to_owned(),
                String::new(),
                us(self.pg.postgres_cpu_us_per_txn),
                format!("{} (pgbench)", us(self.pg.client_cpu_us_per_txn)),
            ],
        ];
        for [what, server, postgres, client] in cpu_rows {
            let _ = writeln!(out, "{what:<30} {server:>9} {postgres:>9} {client:>17}");
        }
        if let Some(budget) = self.server_budget_us() {
            let _ = writeln!(
                out,
                "with both runs CPU-bound, list / pgbench ≥ {LIST_RATIO_TARGET} leaves the server \
                 {budget:.0} µs per list request (it spends {:.0})",
                self.list.server_cpu_us_per_req
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "list / pgbench:        {:.2}  (target ≥ {LIST_RATIO_TARGET}: {})",
            self.list_ratio(),
            met(self.list_ratio() >= LIST_RATIO_TARGET)
        );
        let by_round = self.list_ratio_by_round();
        if by_round.len() > 1 {
            let figures: Vec<String> = by_round.iter().map(|r| format!("{r:.2}")).collect();
            let _ = writeln!(
                out,
                "  by round ({secs} s of each, taking turns): {}",
                figures.join(" ")
            );
        }
        let _ = writeln!(
            out,
            "/v1/auth/me / target:  {:.2}  ({} of {} req/s: {})",
            self.me_ratio(),
            thousands(self.me.wrk.requests_per_sec),
            thousands(ME_TARGET_RPS),
            met(self.me.wrk.requests_per_sec >= ME_TARGET_RPS)
        );
        let sql = match self.list.sql_matches {
            Some(true) => "pgbench script matches the SQL sampled from pg_stat_activity".to_owned(),
            Some(false) => format!(
                "WARNING: the sampled SQL differs from the pgbench script; sampled:\n  {}",
                self.list.sampled_sql.join("\n  ")
            ),
            None => "SQL not sampled".to_owned(),
        };
        let _ = writeln!(out, "{sql}");
        for run in self.runs() {
            if run.wrk.non_2xx > 0 || run.wrk.socket_errors > 0 {
                let _ = writeln!(
                    out,
                    "WARNING: {}: {} non-2xx responses, {} socket errors",
                    run.path, run.wrk.non_2xx, run.wrk.socket_errors
                );
            }
        }
        out
    }

    fn json(&self, root: &Path, script: &str) -> Value {
        let a = self.args;
        let run = |r: &Run| {
            json!({
                "path": r.path,
                "requests_per_sec": r.wrk.requests_per_sec,
                "requests_per_sec_by_round": r.rounds_per_sec,
                "p50_ms": r.wrk.p50_ms,
                "p99_ms": r.wrk.p99_ms,
                "requests": r.wrk.requests,
                "non_2xx": r.wrk.non_2xx,
                "socket_errors": r.wrk.socket_errors,
                "server_cpu_us_per_request": r.server_cpu_us_per_req,
                "postgres_cpu_us_per_request": r.postgres_cpu_us_per_req,
                "wrk_cpu_us_per_request": r.client_cpu_us_per_req,
                "machine_cpu_busy_pct": r.machine_busy_pct,
                "requests_per_sec_over_users_list": self.over_list(r),
            })
        };
        let git = sys::stdout_of(
            Command::new("git")
                .args(["describe", "--always", "--dirty"])
                .current_dir(root),
        )
        .ok();
        json!({
            "benchmark": "cargo xtask bench api",
            "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "git": git,
            "machine": {
                "cpus": std::thread::available_parallelism().map_or(0, usize::from),
                "loadavg_before_load": self.loadavg,
                "cpu_busy_pct_before_load": self.background_busy_pct,
            },
            "settings": {
                "wrk": format!("-t{} -c{} -d{}s --latency", a.threads, a.connections, a.duration),
                "warmup_s": a.warmup,
                "pgbench": format!("-n -M prepared -c{} -j{} -T{}", a.connections, a.pgbench_jobs, rounds(a).1),
                "rounds": rounds(a).0,
                "server_processes": a.processes,
                "TOKIO_WORKER_THREADS": sys::env_nonempty("TOKIO_WORKER_THREADS"),
                "TRELLIS_RUNTIME": sys::env_nonempty("TRELLIS_RUNTIME")
                    .unwrap_or_else(|| "unset: the server's default (per-core since session 22)".to_owned()),
                "TRELLIS_DB_PIPELINED_CONNECTIONS": sys::env_nonempty("TRELLIS_DB_PIPELINED_CONNECTIONS"),
                "round_s": rounds(a).1,
                "server": a.server_bin.as_ref().map_or_else(
                    || "target/release/trellis serve".to_owned(),
                    |bin| format!("{} serve", bin.display()),
                ),
                "TRELLIS_LOG": sys::env_nonempty("TRELLIS_LOG"),
                "TRELLIS_DB_MAX_CONNECTIONS": sys::env_nonempty("TRELLIS_DB_MAX_CONNECTIONS"),
                "scratch_database": self.scratch,
            },
            "tenant": {
                "kind": self.tenant.kind,
                "slug": self.tenant.slug,
                "users": self.tenant.users,
            },
            "endpoints": self.runs().map(run).collect::<Vec<_>>(),
            "pgbench": {
                "tps": self.pg.tps,
                "tps_by_round": self.pg.rounds_tps,
                "latency_avg_ms": self.pg.latency_avg_ms,
                "transactions": self.pg.transactions,
                "failed": self.pg.failed,
                "postgres_cpu_us_per_transaction": self.pg.postgres_cpu_us_per_txn,
                "pgbench_cpu_us_per_transaction": self.pg.client_cpu_us_per_txn,
                "script": script,
            },
            "sql_matches_pg_stat_activity": self.list.sql_matches,
            "ratios": {
                "list_over_pgbench": self.list_ratio(),
                "list_over_pgbench_by_round": self.list_ratio_by_round(),
                "server_cpu_budget_us_for_list_target": self.server_budget_us(),
                "me_over_target": self.me_ratio(),
            },
            "targets": {
                "me_requests_per_sec": ME_TARGET_RPS,
                "list_over_pgbench": LIST_RATIO_TARGET,
                "me_met": self.me.wrk.requests_per_sec >= ME_TARGET_RPS,
                "list_met": self.list_ratio() >= LIST_RATIO_TARGET,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_the_table_show_only_the_start_of_each_uuid() {
        assert_eq!(
            short_path("/v1/conversations/01938c5e-8a2b-7c3d-9e4f-0a1b2c3d4e5f/messages"),
            "/v1/conversations/01938c5e…/messages"
        );
        assert_eq!(short_path("/v1/users?limit=20"), "/v1/users?limit=20");
    }

    const WRK: &str = "Running 20s test @ http://127.0.0.1:40000/v1/auth/me
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.31ms    1.02ms  30.12ms   90.00%
    Req/Sec    14.01k     1.01k   15.55k    70.00%
  Latency Distribution
     50%  850.00us
     75%    2.60ms
     90%    3.11ms
     99%    1.02s
  278822 requests in 20.00s, 150.23MB read
  Socket errors: connect 0, read 2, write 1, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:  13939.81
Transfer/sec:      7.51MB
";

    #[test]
    fn wrk_output_is_parsed() -> Result<()> {
        let f = parse_wrk(WRK)?;
        assert!((f.requests_per_sec - 13939.81).abs() < 1e-9);
        assert!((f.p50_ms - 0.85).abs() < 1e-9);
        assert!((f.p99_ms - 1020.0).abs() < 1e-9);
        assert_eq!(f.requests, 278_822);
        assert_eq!(f.non_2xx, 5);
        assert_eq!(f.socket_errors, 7);
        Ok(())
    }

    #[test]
    fn wrk_output_without_latency_is_an_error() {
        assert!(parse_wrk("Requests/sec:  10.0\n").is_err());
    }

    fn list_round(requests_per_sec: f64, requests: u64, server_us: f64, p50: f64, p99: f64) -> Run {
        Run {
            path: LIST_PATH.to_owned(),
            wrk: WrkFigures {
                requests_per_sec,
                p50_ms: p50,
                p99_ms: p99,
                requests,
                non_2xx: 1,
                socket_errors: 0,
            },
            server_cpu_us_per_req: server_us,
            postgres_cpu_us_per_req: Some(40.0),
            client_cpu_us_per_req: None,
            machine_busy_pct: 90.0,
            sql_matches: Some(true),
            sampled_sql: Vec::new(),
            rounds_per_sec: vec![requests_per_sec],
        }
    }

    #[test]
    fn the_duration_is_split_into_rounds_of_at_least_five_seconds() {
        let args = |duration, rounds| ApiArgs {
            duration,
            connections: 32,
            threads: 1,
            pgbench_jobs: 2,
            users: 100,
            rounds,
            processes: 1,
            warmup: 3,
            server_bin: None,
            content: false,
        };
        assert_eq!(rounds(&args(20, 4)), (4, 5));
        assert_eq!(rounds(&args(15, 4)), (3, 5));
        assert_eq!(rounds(&args(2, 4)), (1, 2));
        assert_eq!(rounds(&args(20, 0)), (1, 20));
        assert_eq!(rounds(&args(60, 3)), (3, 20));
    }

    #[test]
    fn rounds_of_the_list_add_up_requests_and_weigh_cpu_by_requests() {
        let run = Run::merged(vec![
            list_round(20_000.0, 100_000, 40.0, 1.5, 3.0),
            list_round(16_000.0, 80_000, 60.0, 1.9, 4.5),
            list_round(18_000.0, 90_000, 50.0, 1.7, 3.5),
        ])
        .expect("three rounds");
        assert_eq!(run.wrk.requests, 270_000);
        assert_eq!(run.wrk.non_2xx, 3);
        assert!((run.wrk.requests_per_sec - 18_000.0).abs() < 1e-9);
        assert_eq!(run.rounds_per_sec, vec![20_000.0, 16_000.0, 18_000.0]);
        assert!(
            (run.wrk.p50_ms - 1.7).abs() < 1e-9,
            "the median round's p50"
        );
        assert!((run.wrk.p99_ms - 4.5).abs() < 1e-9, "the worst round's p99");
        let server = (100_000.0 * 40.0 + 80_000.0 * 60.0 + 90_000.0 * 50.0) / 270_000.0;
        assert!((run.server_cpu_us_per_req - server).abs() < 1e-9);
        assert_eq!(run.postgres_cpu_us_per_req.map(f64::round), Some(40.0));
        assert_eq!(run.client_cpu_us_per_req, None);
        assert_eq!(run.sql_matches, Some(true));
    }

    #[test]
    fn pgbench_rounds_average_tps_and_weigh_latency_by_transactions() {
        let round = |tps: f64, transactions, latency| PgFigures {
            tps,
            latency_avg_ms: latency,
            transactions,
            failed: 0,
            postgres_cpu_us_per_txn: Some(40.0),
            client_cpu_us_per_txn: Some(13.0),
            rounds_tps: vec![tps],
        };
        let pg = PgFigures::merged(vec![
            round(36_000.0, 180_000, 0.8),
            round(38_000.0, 190_000, 1.0),
        ]);
        assert!((pg.tps - 37_000.0).abs() < 1e-9);
        assert_eq!(pg.transactions, 370_000);
        let latency = (180_000.0 * 0.8 + 190_000.0 * 1.0) / 370_000.0;
        assert!((pg.latency_avg_ms - latency).abs() < 1e-9);
        assert_eq!(pg.rounds_tps, vec![36_000.0, 38_000.0]);
        assert_eq!(pg.client_cpu_us_per_txn.map(f64::round), Some(13.0));
    }

    #[test]
    fn pgbench_output_is_parsed() -> Result<()> {
        let out = "transaction type: list_users.sql
scaling factor: 1
query mode: prepared
number of clients: 32
number of threads: 2
maximum number of tries: 1
duration: 20 s
number of transactions actually processed: 301234
number of failed transactions: 0 (0.000%)
latency average = 2.125 ms
initial connection time = 51.342 ms
tps = 15061.700000 (without initial connection time)
";
        let f = parse_pgbench(out)?;
        assert!((f.tps - 15061.7).abs() < 1e-9);
        assert!((f.latency_avg_ms - 2.125).abs() < 1e-9);
        assert_eq!(f.transactions, 301_234);
        assert_eq!(f.failed, 0);
        Ok(())
    }

    #[test]
    fn seed_output_tells_whether_the_superadmin_is_new() {
        let new = SeedReport::parse(
            "2026 INFO x\ndemo tenant:  demo\ntenant admin: admin@demo.example.com / pw\nsuperadmin:   root@trellis.example.com / pw\n",
        );
        assert_eq!(new.demo_tenant.as_deref(), Some("demo"));
        assert_eq!(new.demo_admin.as_deref(), Some("admin@demo.example.com"));
        assert_eq!(
            new.new_superadmin.as_deref(),
            Some("root@trellis.example.com")
        );
        let old = SeedReport::parse(
            "superadmin:   root@trellis.example.com (already existed; password unchanged)\n",
        );
        assert_eq!(old.new_superadmin, None);
    }

    #[test]
    fn the_pgbench_script_is_the_adapters_unit_of_work() {
        let script = pgbench_script("01a23d69-ced5-7463-830a-2cd3cefc0b40");
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines.len(), 8);
        assert_eq!(lines[0], "\\startpipeline");
        assert_eq!(lines[1], "BEGIN READ ONLY;");
        assert_eq!(
            lines[2],
            "SET LOCAL trellis.tenant_id = '01a23d69-ced5-7463-830a-2cd3cefc0b40';"
        );
        assert_eq!(lines[3], "\\syncpipeline");
        assert!(lines[4].ends_with("= :tenant AND \"users\".\"deleted_at\" IS NULL ORDER BY \"users\".\"id\" ASC LIMIT :limit;"));
        assert_eq!(lines[5], "\\syncpipeline");
        assert_eq!(lines[6], "ROLLBACK;");
        assert_eq!(lines[7], "\\endpipeline");
        assert!(!script.contains('$'));
    }

    #[test]
    fn sampled_sql_is_compared_ignoring_whitespace() {
        let sampled = vec![
            "ROLLBACK".to_owned(),
            OPEN_READ_SQL.replace("$1", "'01a23d69-ced5-7463-830a-2cd3cefc0b40'"),
            LIST_USERS_SQL.replace(" FROM ", "\n  FROM "),
        ];
        assert!(sql_matches(&sampled));
        assert!(!sql_matches(&sampled[..2]));
        let unscoped = [
            OPEN_READ_SQL.replace("$1", "'x'; DROP TABLE users; --'"),
            sampled[2].clone(),
        ];
        assert!(!sql_matches(&unscoped));
    }

    #[test]
    fn postgres_cpu_counts_only_processes_that_ran_through_the_whole_window() {
        let before = HashMap::from([(1, 10), (2, 5)]);
        let after = HashMap::from([(1, 25), (3, 100)]);
        assert_eq!(postgres_ticks_between(&before, &after), 15);
    }

    #[test]
    fn cpu_ticks_become_microseconds_per_unit_of_work() {
        assert_eq!(us_per(250, 100.0, 1000.0), Some(2500.0));
        assert_eq!(us_per(0, 100.0, 1000.0), None);
        assert_eq!(us_per(250, 100.0, 0.0), None);
    }

    #[test]
    fn this_process_stat_is_read_past_its_name() {
        let (name, fields) = stat_of("self").unwrap();
        assert!(!name.is_empty());
        // Field 52 exists since Linux 3.5; utime (14) is where the CPU times start.
        assert!(fields.len() >= 50, "{fields:?}");
        assert!(children_ticks().is_ok());
    }

    #[test]
    fn the_servers_budget_is_what_the_target_leaves_after_postgres_and_wrk() {
        // Session 9: pgbench 73 + 21 µs per transaction; the list's Postgres and wrk
        // 108 + 21 µs per request.
        assert_eq!(server_budget_us(94.0, 129.0), 59.0);
        assert_eq!(server_budget_us(50.0, 129.0), 0.0);
    }

    #[test]
    fn durations_are_read_in_milliseconds() {
        assert_eq!(parse_duration_ms("2.50ms"), Some(2.5));
        assert_eq!(parse_duration_ms("500.00us"), Some(0.5));
        assert_eq!(parse_duration_ms("1.00s"), Some(1000.0));
        assert_eq!(parse_duration_ms("fast"), None);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(12_345.6), "12,346");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
