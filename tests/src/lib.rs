//! The black-box test harness: `spawn_app()` boots the real `trellis` app (the same
//! `bootstrap` the binary uses) on port 0 against the PostgreSQL in `DATABASE_URL`,
//! which `cargo xtask test` provisions and migrates. Tests share the database and stay
//! apart by creating their own tenants with unique slugs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)] // test support

use base64::Engine as _;
use serde_json::{Value, json};
use trellis_app::{App, Config, PasswordCost, bootstrap};
use trellis_kernel::{Email, Password, PlatformCtx, Slug, secrets::random_token};
use trellis_tenancy::service::CreateTenant;
use trellis_tenancy::{Branding, Plan, TenantConfig};

/// A running app and an HTTP client for it.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub app: App,
    /// How many ingestion workers the configuration asked for.
    pub app_workers: usize,
    /// Set for apps that run ingestion workers: the queue lock they hold.
    _queue_lock: Option<sea_orm::DatabaseConnection>,
}

/// The advisory lock the queue tests of `trellis-postgres` hold ("rag-queu" in
/// ASCII, the same value as there). Workers claim *any* tenant's job, so a test
/// process that runs workers holds it too, and never takes a queue test's job.
const QUEUE_TESTS_LOCK: i64 = 0x7261_672d_7175_6575;

/// A tenant created for one test, with its admin signed in.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: String,
    pub slug: String,
    pub admin_id: String,
    pub admin_email: String,
    pub admin_password: String,
    pub admin_token: String,
}

/// The database URL, or a message saying how to get one.
#[must_use]
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the tests with `cargo xtask test`, which provisions and migrates PostgreSQL",
    )
}

/// A slug (or any unique name) no other test uses.
#[must_use]
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}-{}", &id[id.len() - 12..])
}

/// Boots the app against Postgres on an ephemeral port.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Logs the apps' events to the test's output when `TRELLIS_LOG` is set (as for
/// `trellis serve`), so a failing test can show what the server said; silent by default.
fn init_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// Like [`spawn_app`], after letting the test adjust the configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let config = test_config(adjust);
    let app = bootstrap(&config).await.expect("app failed to start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app.router();
    tokio::spawn(async move {
        trellis_http::serve(listener, router, std::future::pending())
            .await
            .unwrap();
    });
    TestApp {
        base,
        http: reqwest::Client::new(),
        app,
        app_workers: config.rag.workers,
        _queue_lock: None,
    }
}

/// Like [`spawn_app`], served as `TRELLIS_RUNTIME=per-core` serves: `runtimes`
/// single-threaded runtimes, each on a thread of its own, for the rest of the test
/// process.
pub async fn spawn_per_core_app(runtimes: usize) -> TestApp {
    let config = test_config(|c| c.runtime = trellis_app::RuntimeSetting::PerCore(runtimes));
    let (started, ready) = tokio::sync::oneshot::channel();
    let workers = config.rag.workers;
    std::thread::spawn(move || {
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (app, listener) = first.block_on(async {
            let app = bootstrap(&config).await.expect("app failed to start");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            (app, listener)
        });
        let base = format!("http://{}", listener.local_addr().unwrap());
        if started.send((app.clone(), base)).is_err() {
            return;
        }
        trellis_app::runtimes::serve(
            &first,
            runtimes,
            listener,
            app.router(),
            std::future::pending(),
            async {},
        )
        .unwrap();
    });
    let (app, base) = ready.await.expect("app failed to start");
    TestApp {
        base,
        http: reqwest::Client::new(),
        app,
        app_workers: workers,
        _queue_lock: None,
    }
}

/// The configuration test apps start with, after `adjust`.
fn test_config(adjust: impl FnOnce(&mut Config)) -> Config {
    init_logs();
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let mut config = Config {
        database_url: Some(database_url()),
        db_max_connections: 4,
        jwt_secret: Some(random_token(48).into_bytes()),
        encryption_key: Some(("test".into(), key)),
        password_cost: PasswordCost::InsecureFastForTests,
        ..Config::default()
    };
    // In the checkout's git-ignored `.trellis`, not a shared temp directory: a
    // directory another user made first would not be writable.
    config.rag.blobs = Some(trellis_app::BlobSetting::Dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.trellis/test-blobs"),
    ));
    adjust(&mut config);
    config
}

/// Like [`spawn_app_with`], plus the ingestion worker pool `trellis serve` runs (with a
/// short lease). Waits for the queue lock first, so tests that ingest run one at a time.
pub async fn spawn_ingesting_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    use sea_orm::ConnectionTrait as _;
    let mut opts = sea_orm::ConnectOptions::new(database_url());
    opts.max_connections(1).sqlx_logging(false);
    let lock = sea_orm::Database::connect(opts).await.unwrap();
    lock.execute_unprepared(&format!("SELECT pg_advisory_lock({QUEUE_TESTS_LOCK})"))
        .await
        .unwrap();
    let mut app = spawn_app_with(adjust).await;
    // Detached: the pool lives as long as the test's runtime.
    let _workers = trellis_app::workers::Workers::spawn(
        app.app.rag.clone(),
        app.app_workers,
        std::time::Duration::from_secs(3),
    );
    app._queue_lock = Some(lock);
    app
}

/// [`spawn_ingesting_app_with`] with the default configuration.
pub async fn spawn_ingesting_app() -> TestApp {
    spawn_ingesting_app_with(|_| {}).await
}

impl TestApp {
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates a tenant with an admin (as the platform would) and logs the admin in.
    pub async fn tenant(&self) -> TestTenant {
        let slug = unique("t");
        let email = format!("admin@{slug}.example.com");
        let password = "admin-password-1".to_owned();
        let created = self
            .app
            .tenancy
            .create_tenant(
                &PlatformCtx::system(),
                CreateTenant {
                    name: format!("Tenant {slug}"),
                    slug: Slug::parse(&slug).unwrap(),
                    subdomain: None,
                    custom_domain: None,
                    plan: Plan::Free,
                    branding: Branding::default(),
                    config: TenantConfig::default(),
                    admin_email: Email::parse(&email).unwrap(),
                    admin_name: "Admin".into(),
                    admin_password: Password::parse(&password).unwrap(),
                },
            )
            .await
            .unwrap();
        let token = self.login(&slug, &email, &password).await;
        TestTenant {
            id: created.tenant.id.to_string(),
            slug,
            admin_id: created.admin_id.to_string(),
            admin_email: email,
            admin_password: password,
            admin_token: token,
        }
    }

    /// A superadmin's access token.
    pub async fn superadmin(&self) -> String {
        let email = format!("{}@platform.example.com", unique("root"));
        let password = Password::parse("root-password-1").unwrap();
        self.app
            .identity
            .create_platform_admin(
                &PlatformCtx::system(),
                Email::parse(&email).unwrap(),
                "Root",
                &password,
            )
            .await
            .unwrap();
        let res = self
            .post_json(
                "/v1/auth/login",
                None,
                &json!({"email": email, "password": "root-password-1"}),
            )
            .await;
        assert_eq!(res.status(), 200, "superadmin login failed");
        res.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Logs in and returns the access token, asserting success.
    pub async fn login(&self, slug: &str, email: &str, password: &str) -> String {
        let res = self.login_raw(slug, email, password).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "login failed: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn login_raw(&self, slug: &str, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/v1/auth/login",
            None,
            &json!({"tenant": slug, "email": email, "password": password}),
        )
        .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.delete(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        self.send_json(reqwest::Method::POST, path, token, body)
            .await
    }

    pub async fn patch_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        self.send_json(reqwest::Method::PATCH, path, token, body)
            .await
    }

    pub async fn put_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        self.send_json(reqwest::Method::PUT, path, token, body)
            .await
    }

    /// Uploads `bytes` as `filename` into a collection (multipart `file` part).
    pub async fn upload(
        &self,
        token: &str,
        collection: &str,
        filename: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(filename.to_owned());
        let form = reqwest::multipart::Form::new().part("file", part);
        self.http
            .post(self.url(&format!("/v1/rag/collections/{collection}/documents")))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Polls a document until it leaves `uploaded`/`processing` (or 60 s pass).
    pub async fn wait_processed(&self, token: &str, document: &str) -> Value {
        for _ in 0..600 {
            let doc: Value = self
                .get(&format!("/v1/rag/documents/{document}"), Some(token))
                .await
                .json()
                .await
                .unwrap();
            if doc["status"] == "processed" || doc["status"] == "error" {
                return doc;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("document {document} was not processed in time");
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// Creates a user in the admin's tenant and returns its JSON.
    pub async fn create_user(&self, admin_token: &str, email: &str, role: &str) -> Value {
        let res = self
            .post_json(
                "/v1/users",
                Some(admin_token),
                &json!({"email": email, "name": "Test User", "role": role, "password": "user-password-1"}),
            )
            .await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "creating a user failed: {body}");
        body
    }
}

/// Reads a problem+json response, asserting the status and content type.
pub async fn problem(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status, "unexpected status");
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/problem+json"),
        "content type was {ct:?}"
    );
    res.json().await.unwrap()
}
