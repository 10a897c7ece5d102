//! Shared set-up: database URLs from the environment, migrations applied once per test
//! binary, connections as the application role, and fresh tenants.

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    QueryResult, Statement, TransactionTrait,
};
use tokio::sync::OnceCell;
use trellis_content::{ConversationId, ConversationRepo, ModelParameters, NewConversation};
use trellis_identity::{NewUser, Preferences, Tier, User, UserRepo};
use trellis_kernel::{Email, PasswordHash, PlatformCtx, Role, Slug, TenantCtx, TenantId, UserId};
use trellis_postgres::PgStore;
use trellis_tenancy::{
    Branding, FirstAdmin, LlmProvider, NewTenant, Plan, Tenant, TenantConfig, TenantRepo,
};

fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set. Run these tests with `cargo xtask test`, which starts \
             PostgreSQL and sets it; or run `cargo xtask db up`, then \
             `set -a; . .trellis/db.env; set +a` before `cargo test`."
        ),
    }
}

/// The application role: owns nothing, no `BYPASSRLS`.
pub fn app_url() -> String {
    var("DATABASE_URL")
}

/// The role that owns the schema and runs migrations.
pub fn owner_url() -> String {
    var("TRELLIS_MIGRATION_DATABASE_URL")
}

static MIGRATED: OnceCell<()> = OnceCell::const_new();

/// Applies the migrations once per test binary (the advisory lock in `migrate`
/// serialises binaries running at the same time).
pub async fn migrated() {
    MIGRATED
        .get_or_init(|| async {
            trellis_postgres::migrate(&owner_url())
                .await
                .expect("migrations apply");
        })
        .await;
}

/// A store logged in as the application role, on a migrated database. Each test
/// makes its own, because a pool belongs to the runtime of the test that made it.
pub async fn store() -> PgStore {
    migrated().await;
    PgStore::connect(&app_url(), 4)
        .await
        .expect("connect as the app role")
}

/// A single raw connection as `url`; one connection, so settings made outside a
/// transaction are visible to the next statement.
pub async fn raw(url: &str) -> DatabaseConnection {
    migrated().await;
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(1).sqlx_logging(false);
    Database::connect(opts).await.expect("connect")
}

pub fn stmt(sql: &str) -> Statement {
    Statement::from_string(DbBackend::Postgres, sql.to_owned())
}

pub fn stmt_with(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Opens a transaction scoped to `tenant`, as the adapter does.
pub async fn begin_in(db: &DatabaseConnection, tenant: TenantId) -> DatabaseTransaction {
    let txn = db.begin().await.unwrap();
    txn.execute_raw(stmt_with(
        "SELECT set_config('trellis.tenant_id', $1, true)",
        vec![tenant.to_string().into()],
    ))
    .await
    .unwrap();
    txn
}

pub async fn query(db: &impl ConnectionTrait, sql: &str) -> Vec<QueryResult> {
    db.query_all_raw(stmt(sql))
        .await
        .unwrap_or_else(|e| panic!("query failed: {e}\n{sql}"))
}

pub fn unique_slug(prefix: &str) -> Slug {
    let id = uuid::Uuid::now_v7().simple().to_string();
    Slug::parse(&format!("{prefix}-{}", &id[id.len() - 12..])).unwrap()
}

pub fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

pub fn new_tenant(slug: &Slug) -> NewTenant {
    NewTenant {
        id: TenantId::new(),
        name: format!("Tenant {slug}"),
        slug: slug.clone(),
        subdomain: slug.clone(),
        custom_domain: None,
        branding: Branding::default(),
        config: TenantConfig::default(),
        plan: Plan::Free,
    }
}

pub fn first_admin() -> FirstAdmin {
    FirstAdmin {
        id: UserId::new(),
        email: email("admin@example.com"),
        name: "First Admin".into(),
        password_hash: PasswordHash::from_phc("$argon2id$fake"),
    }
}

/// A fresh tenant with its first admin: the tenant, a system context in it, the
/// admin's id.
pub async fn tenant(store: &PgStore) -> (Tenant, TenantCtx, UserId) {
    let admin = first_admin();
    let admin_id = admin.id;
    let t = store
        .create(
            &PlatformCtx::system(),
            new_tenant(&unique_slug("pg")),
            admin,
        )
        .await
        .unwrap();
    let ctx = TenantCtx::system(t.id);
    (t, ctx, admin_id)
}

pub async fn user(store: &PgStore, ctx: &TenantCtx, addr: &str) -> User {
    let new = NewUser {
        id: UserId::new(),
        email: email(addr),
        email_verified: false,
        name: "Some One".into(),
        username: None,
        avatar_url: None,
        role: Role::User,
        tier: Tier::Free,
        password_hash: Some(PasswordHash::from_phc("$argon2id$x")),
        oauth: None,
        preferences: Preferences::default(),
    };
    UserRepo::insert(store, ctx, new).await.unwrap()
}

/// Waits until a cache's listener is connected (`listening` holds), so reads are kept
/// from then on.
pub async fn until_listening(listening: impl Fn() -> bool) {
    for _ in 0..200 {
        if listening() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the change listener never connected");
}

/// Reads until `done` holds (a change notice takes a moment); the last read. Gives up
/// after 3 s, before cache entries expire on their own (5 s), so only a notice can
/// make it hold.
pub async fn eventually<T, F, Fut>(read: F, done: impl Fn(&T) -> bool) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut last = read().await;
    for _ in 0..60 {
        if done(&last) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        last = read().await;
    }
    last
}

/// An empty database of its own on the same server, for tests that migrate up and
/// down, so the shared database other tests use is never rolled back under them.
/// [`Scratch::drop_database`] removes it.
pub struct Scratch {
    pub url: String,
    name: String,
    owner: DatabaseConnection,
}

impl Scratch {
    pub async fn new() -> Self {
        let owner = raw(&owner_url()).await;
        let name = format!("trellis_scratch_{}", uuid::Uuid::now_v7().simple());
        owner
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("the migration role may create a scratch database (CREATEDB)");
        let mut url = url::Url::parse(&owner_url()).unwrap();
        url.set_path(&format!("/{name}"));
        // pgvector is installed by a superuser (the owner role cannot), exactly as
        // `cargo xtask db up` and docs/operations.md do for the main database.
        if let Ok(admin) = std::env::var("TRELLIS_ADMIN_DATABASE_URL") {
            let mut admin_url = url::Url::parse(&admin).unwrap();
            admin_url.set_path(&format!("/{name}"));
            let admin = raw(admin_url.as_str()).await;
            admin
                .execute_unprepared("CREATE EXTENSION IF NOT EXISTS vector")
                .await
                .unwrap();
            admin.close().await.unwrap();
        }
        Self {
            url: url.to_string(),
            name,
            owner,
        }
    }

    pub async fn drop_database(self) {
        self.owner
            .execute_unprepared(&format!("DROP DATABASE \"{}\" WITH (FORCE)", self.name))
            .await
            .unwrap();
    }
}

/// A new conversation of `owner` with no agent and default parameters.
pub async fn conversation(store: &PgStore, ctx: &TenantCtx, owner: UserId) -> ConversationId {
    ConversationRepo::insert(
        store,
        ctx,
        NewConversation {
            id: ConversationId::new(),
            owner_id: owner,
            title: Some("Handbook".into()),
            provider: LlmProvider::Openai,
            model: "gpt-4o".into(),
            agent_id: None,
            parameters: ModelParameters::default(),
        },
    )
    .await
    .unwrap()
    .id
}
