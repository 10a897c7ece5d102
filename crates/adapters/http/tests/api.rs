//! Router tests: the whole HTTP app over the in-memory store and real crypto, driven
//! in-process with `tower::ServiceExt::oneshot` (no sockets), checking status codes,
//! problem documents, tenancy isolation and the operational endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt as _;
use trellis_crypto::{AesGcmCipher, Argon2Hasher, JwtSigner};
use trellis_http::{AppState, HttpConfig, Readiness};
use trellis_identity::service::IdentityPorts;
use trellis_identity::{IdentityConfig, IdentityService};
use trellis_kernel::{Email, Password, PlatformCtx, Slug, SystemClock};
use trellis_memory::{InMemoryLoginThrottle, MemoryStore};
use trellis_tenancy::TenancyService;
use trellis_tenancy::service::CreateTenant;

const PROBLEM_JSON: &str = "application/problem+json";
const PASSWORD: &str = "correct horse battery";

struct TestApp {
    router: Router,
    tenancy: Arc<TenancyService>,
    identity: Arc<IdentityService>,
}

fn services() -> (Arc<TenancyService>, Arc<IdentityService>) {
    let store = Arc::new(MemoryStore::new());
    let hasher = Arc::new(Argon2Hasher::fast_insecure_for_tests().unwrap());
    let tenancy = Arc::new(TenancyService::new(
        store.clone(),
        hasher.clone(),
        Arc::new(AesGcmCipher::ephemeral()),
        Arc::new(SystemClock),
    ));
    let identity = Arc::new(IdentityService::new(
        IdentityPorts {
            users: store.clone(),
            memberships: store.clone(),
            keys: store.clone(),
            refresh: store.clone(),
            admins: store.clone(),
            tenants: store,
            hasher,
            signer: Arc::new(JwtSigner::new(&[42u8; 32]).unwrap()),
            throttle: Arc::new(InMemoryLoginThrottle::default()),
            clock: Arc::new(SystemClock),
        },
        IdentityConfig::default(),
    ));
    (tenancy, identity)
}

fn app_with(config: HttpConfig, readiness: Option<Arc<dyn Readiness>>) -> TestApp {
    let (tenancy, identity) = services();
    let mut state = AppState::new(tenancy.clone(), identity.clone()).with_config(config);
    if let Some(r) = readiness {
        state = state.with_readiness(r);
    }
    TestApp {
        router: trellis_http::router(state),
        tenancy,
        identity,
    }
}

fn app() -> TestApp {
    app_with(HttpConfig::default(), None)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a problem document of this status and `type` suffix, and returns it.
    fn problem(&self, status: StatusCode, kind: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.content_type(), PROBLEM_JSON, "{}", self.text);
        let p = self.json();
        assert_eq!(
            p["type"],
            format!("https://trellis.dev/problems/{kind}"),
            "{p}"
        );
        assert_eq!(p["status"], status.as_u16());
        assert!(p["request_id"].is_string(), "{p}");
        p
    }
}

impl TestApp {
    async fn raw(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.raw(req.unwrap()).await
    }

    async fn send_text(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.raw(req.body(Body::from(body.to_owned())).unwrap())
            .await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, None).await
    }

    /// A tenant with an admin `admin@<slug>.test`, made through the service.
    async fn tenant(&self, slug: &str) -> String {
        let created = self
            .tenancy
            .create_tenant(
                &PlatformCtx::system(),
                CreateTenant {
                    name: format!("Tenant {slug}"),
                    slug: Slug::parse(slug).unwrap(),
                    subdomain: None,
                    custom_domain: None,
                    plan: Default::default(),
                    branding: Default::default(),
                    config: Default::default(),
                    admin_email: Email::parse(&format!("admin@{slug}.test")).unwrap(),
                    admin_name: "Admin".into(),
                    admin_password: Password::parse(PASSWORD).unwrap(),
                },
            )
            .await
            .unwrap();
        created.tenant.id.to_string()
    }

    async fn login(&self, tenant: Option<&str>, email: &str, password: &str) -> Reply {
        let mut body = json!({"email": email, "password": password});
        if let Some(t) = tenant {
            body["tenant"] = json!(t);
        }
        self.send(Method::POST, "/v1/auth/login", None, Some(&body))
            .await
    }

    /// Logs in the admin of `slug` and returns the access token.
    async fn admin_token(&self, slug: &str) -> String {
        let r = self
            .login(Some(slug), &format!("admin@{slug}.test"), PASSWORD)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    async fn superadmin_token(&self) -> String {
        self.identity
            .create_platform_admin(
                &PlatformCtx::system(),
                Email::parse("root@platform.test").unwrap(),
                "Root",
                &Password::parse(PASSWORD).unwrap(),
            )
            .await
            .unwrap();
        let r = self.login(None, "root@platform.test", PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    async fn create_user(&self, token: &str, email: &str) -> Reply {
        self.send(
            Method::POST,
            "/v1/users",
            Some(token),
            Some(&json!({"email": email, "name": "Ann", "role": "user", "password": PASSWORD})),
        )
        .await
    }
}

// ----- malformed input -------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = app();
    let r = app
        .send_text(Method::POST, "/v1/auth/login", None, "{\"email\": ")
        .await;
    r.problem(StatusCode::BAD_REQUEST, "malformed-body");
}

#[tokio::test]
async fn an_unknown_field_is_a_400_problem_that_names_it() {
    let app = app();
    let r = app
        .send(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(&json!({"email": "a@b.test", "password": PASSWORD, "is_admin": true})),
        )
        .await;
    let p = r.problem(StatusCode::BAD_REQUEST, "malformed-body");
    assert!(p["detail"].as_str().unwrap().contains("is_admin"), "{p}");
}

#[tokio::test]
async fn a_wrong_type_is_a_400_problem() {
    let app = app();
    let r = app
        .send(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(&json!({"email": 42, "password": PASSWORD})),
        )
        .await;
    r.problem(StatusCode::BAD_REQUEST, "malformed-body");
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_a_415_problem() {
    let app = app();
    let req = Request::post("/v1/auth/login")
        .body(Body::from(r#"{"email":"a@b.test","password":"x"}"#))
        .unwrap();
    app.raw(req)
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
}

#[tokio::test]
async fn an_invalid_email_is_a_422_problem_naming_the_email_field() {
    let app = app();
    app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    let r = app.create_user(&token, "not-an-email").await;
    let p = r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(p["errors"][0]["field"], "email", "{p}");
    assert!(p["errors"][0]["reason"].is_string());
}

#[tokio::test]
async fn an_oversized_body_with_content_length_is_a_413_problem() {
    let app = app();
    let big = format!(r#"{{"refresh_token":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let req = Request::post("/v1/auth/refresh")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big))
        .unwrap();
    app.raw(req)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
}

#[tokio::test]
async fn a_streamed_body_over_a_configured_limit_is_a_413_problem() {
    let app = app_with(
        HttpConfig {
            body_limit_bytes: 1024,
            ..HttpConfig::default()
        },
        None,
    );
    // No Content-Length: the limit must bite while the body is read.
    let big = format!(r#"{{"refresh_token":"{}"}}"#, "x".repeat(4096));
    let req = Request::post("/v1/auth/refresh")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big))
        .unwrap();
    app.raw(req)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
}

#[tokio::test]
async fn a_page_limit_above_100_is_a_400_problem_naming_limit() {
    let app = app();
    app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    let r = app.get("/v1/users?limit=101", Some(&token)).await;
    let p = r.problem(StatusCode::BAD_REQUEST, "bad-request");
    assert_eq!(p["errors"][0]["field"], "limit");
}

#[tokio::test]
async fn a_non_numeric_limit_is_a_400_problem() {
    let app = app();
    app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    app.get("/v1/users?limit=lots", Some(&token))
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
}

#[tokio::test]
async fn a_malformed_id_in_the_path_is_a_400_problem() {
    let app = app();
    app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    app.get("/v1/users/not-a-uuid", Some(&token))
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
}

// ----- authentication ----------------------------------------------------------------------

#[tokio::test]
async fn a_request_without_a_token_is_a_401_problem_asking_for_bearer() {
    let app = app();
    let r = app.get("/v1/users", None).await;
    r.problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(r.headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
}

#[tokio::test]
async fn a_forged_token_is_a_401_problem() {
    let app = app();
    app.get("/v1/users", Some("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"))
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_identical_401_bodies() {
    let app = app();
    app.tenant("acme").await;
    let wrong = app
        .login(Some("acme"), "admin@acme.test", "not the password")
        .await;
    let unknown = app
        .login(Some("acme"), "nobody@acme.test", "not the password")
        .await;
    let unknown_tenant = app
        .login(Some("nope"), "admin@acme.test", "not the password")
        .await;
    let strip = |r: &Reply| {
        let mut p = r.problem(StatusCode::UNAUTHORIZED, "unauthenticated");
        p.as_object_mut().unwrap().remove("request_id");
        p
    };
    assert_eq!(strip(&wrong), strip(&unknown));
    assert_eq!(strip(&wrong), strip(&unknown_tenant));
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_with_retry_after() {
    let app = app();
    app.tenant("acme").await;
    let mut last = None;
    for _ in 0..10 {
        let r = app
            .login(Some("acme"), "admin@acme.test", "wrong password")
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            last = Some(r);
            break;
        }
    }
    let r = last.expect("never throttled");
    r.problem(StatusCode::TOO_MANY_REQUESTS, "throttled");
    let secs: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs > 0);
}

#[tokio::test]
async fn a_session_refreshes_once_and_logout_ends_it() {
    let app = app();
    app.tenant("acme").await;
    let r = app.login(Some("acme"), "admin@acme.test", PASSWORD).await;
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let s = r.json();
    assert_eq!(s["token_type"], "Bearer");
    assert_eq!(s["role"], "tenant_admin");
    let refresh = s["refresh_token"].as_str().unwrap().to_owned();

    let body = json!({"refresh_token": refresh});
    let r = app
        .send(Method::POST, "/v1/auth/refresh", None, Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let next = r.json()["refresh_token"].as_str().unwrap().to_owned();
    // The first token is spent.
    app.send(Method::POST, "/v1/auth/refresh", None, Some(&body))
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");

    let r = app
        .send(
            Method::POST,
            "/v1/auth/logout",
            None,
            Some(&json!({"refresh_token": next})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn me_describes_the_signed_in_user_and_their_permissions() {
    let app = app();
    let tid = app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    let r = app.get("/v1/auth/me", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let me = r.json();
    assert_eq!(me["user"]["email"], "admin@acme.test");
    assert_eq!(me["tenant_id"], tid);
    assert_eq!(me["guest"], false);
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("users_manage"))
    );
}

#[tokio::test]
async fn changing_ones_own_password_needs_the_current_one() {
    let app = app();
    app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    let wrong =
        json!({"current_password": "not the password", "new_password": "a brand new password"});
    app.send(
        Method::POST,
        "/v1/auth/password",
        Some(&token),
        Some(&wrong),
    )
    .await
    .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    let right = json!({"current_password": PASSWORD, "new_password": "a brand new password"});
    let r = app
        .send(
            Method::POST,
            "/v1/auth/password",
            Some(&token),
            Some(&right),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = app
        .login(Some("acme"), "admin@acme.test", "a brand new password")
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

// ----- platform and tenant boundaries ------------------------------------------------------

#[tokio::test]
async fn a_superadmin_creates_a_tenant_whose_admin_can_log_in() {
    let app = app();
    let root = app.superadmin_token().await;
    let body = json!({
        "name": "Globex", "slug": "globex", "plan": "pro",
        "branding": {"primary_color": "#FFAA00"},
        "admin": {"email": "boss@globex.test", "name": "Boss", "password": PASSWORD}
    });
    let r = app
        .send(Method::POST, "/v1/tenants", Some(&root), Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let t = r.json();
    assert_eq!(t["slug"], "globex");
    assert_eq!(t["plan"], "pro");
    assert_eq!(t["branding"]["primary_color"], "#ffaa00");
    assert!(t["admin_id"].is_string());
    let location = r.headers[header::LOCATION].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!("/v1/tenants/{}", t["id"].as_str().unwrap())
    );
    assert_eq!(app.get(&location, Some(&root)).await.status, StatusCode::OK);

    let again = app
        .send(Method::POST, "/v1/tenants", Some(&root), Some(&body))
        .await;
    again.problem(StatusCode::CONFLICT, "conflict");

    let r = app
        .login(Some("globex"), "boss@globex.test", PASSWORD)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn a_tenant_body_with_a_bad_admin_email_names_admin_email() {
    let app = app();
    let root = app.superadmin_token().await;
    let body = json!({
        "name": "Globex", "slug": "Globex!",
        "admin": {"email": "boss", "name": "Boss", "password": PASSWORD}
    });
    let r = app
        .send(Method::POST, "/v1/tenants", Some(&root), Some(&body))
        .await;
    let p = r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["slug", "admin.email"]);
}

#[tokio::test]
async fn a_tenant_token_on_a_platform_route_is_forbidden() {
    let app = app();
    app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    app.get("/v1/tenants", Some(&token))
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn a_platform_token_on_a_tenant_route_is_forbidden() {
    let app = app();
    let root = app.superadmin_token().await;
    app.get("/v1/users", Some(&root))
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn a_duplicate_email_is_a_409_problem() {
    let app = app();
    app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    let first = app.create_user(&token, "ann@acme.test").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let again = app.create_user(&token, "ANN@acme.test").await;
    again.problem(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn a_tenant_b_admin_gets_404_for_tenant_a_users_and_changes_nothing() {
    let app = app();
    app.tenant("alpha").await;
    app.tenant("beta").await;
    let a = app.admin_token("alpha").await;
    let b = app.admin_token("beta").await;
    let created = app.create_user(&a, "ann@alpha.test").await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let before = created.json();
    let path = format!("/v1/users/{}", before["id"].as_str().unwrap());

    app.get(&path, Some(&b))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    app.send(
        Method::PATCH,
        &path,
        Some(&b),
        Some(&json!({"name": "Pwned", "active": false, "role": "tenant_admin"})),
    )
    .await
    .problem(StatusCode::NOT_FOUND, "not-found");
    app.send(Method::DELETE, &path, Some(&b), None)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    app.send(
        Method::POST,
        &format!("{path}/password"),
        Some(&b),
        Some(&json!({"new_password": "taken over now"})),
    )
    .await
    .problem(StatusCode::NOT_FOUND, "not-found");

    let after = app.get(&path, Some(&a)).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.json(), before);
    // And the password still works.
    let r = app.login(Some("alpha"), "ann@alpha.test", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn an_admin_lists_patches_and_deletes_users_in_pages() {
    let app = app();
    app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    for i in 0..3 {
        let r = app.create_user(&token, &format!("u{i}@acme.test")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let page = app.get("/v1/users?limit=2", Some(&token)).await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let rest = app
        .get(&format!("/v1/users?limit=2&cursor={cursor}"), Some(&token))
        .await
        .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert!(rest["next_cursor"].is_null());

    let only_users = app.get("/v1/users?role=user", Some(&token)).await.json();
    assert_eq!(only_users["items"].as_array().unwrap().len(), 3);

    let id = page["items"][1]["id"].as_str().unwrap();
    let r = app
        .send(
            Method::PATCH,
            &format!("/v1/users/{id}"),
            Some(&token),
            Some(&json!({"name": "Renamed", "tier": "pro", "avatar_url": null})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["name"], "Renamed");
    assert_eq!(r.json()["tier"], "pro");

    let r = app
        .send(
            Method::DELETE,
            &format!("/v1/users/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    app.get(&format!("/v1/users/{id}"), Some(&token))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn a_plain_user_may_not_invite_users() {
    let app = app();
    app.tenant("acme").await;
    let admin = app.admin_token("acme").await;
    app.create_user(&admin, "ann@acme.test").await;
    let r = app.login(Some("acme"), "ann@acme.test", PASSWORD).await;
    let ann = r.json()["access_token"].as_str().unwrap().to_owned();
    app.create_user(&ann, "bob@acme.test")
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
}

// ----- tenant settings -----------------------------------------------------------------------

#[tokio::test]
async fn the_llm_api_key_is_write_only() {
    let app = app();
    app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    app.get("/v1/tenant/llm", Some(&token))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let body = json!({
        "provider": "openai", "model": "gpt-4o", "temperature": 0.3, "max_tokens": 1000,
        "api_key": "sk-very-secret-key-abcd"
    });
    let r = app
        .send(Method::PUT, "/v1/tenant/llm", Some(&token), Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains("very-secret"));
    let got = app.get("/v1/tenant/llm", Some(&token)).await;
    assert!(!got.text.contains("very-secret"));
    let cfg = got.json();
    assert_eq!(cfg["has_api_key"], true);
    assert_eq!(cfg["api_key_hint"], "sk-…abcd");

    // Absent keeps the key; null clears it.
    let mut keep = body.clone();
    keep.as_object_mut().unwrap().remove("api_key");
    let r = app
        .send(Method::PUT, "/v1/tenant/llm", Some(&token), Some(&keep))
        .await;
    assert_eq!(r.json()["has_api_key"], true);
    let mut clear = body;
    clear["api_key"] = Value::Null;
    let r = app
        .send(Method::PUT, "/v1/tenant/llm", Some(&token), Some(&clear))
        .await;
    assert_eq!(r.json()["has_api_key"], false);
}

#[tokio::test]
async fn tenant_settings_and_widget_round_trip() {
    let app = app();
    app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    let r = app
        .send(
            Method::PATCH,
            "/v1/tenant",
            Some(&token),
            Some(&json!({
                "name": "Acme Inc",
                "custom_domain": "chat.acme.test",
                "branding": {"primary_color": "#123456", "font_family": "Inter"},
                "config": {"default_model": "claude-3-5-sonnet"}
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let t = app.get("/v1/tenant", Some(&token)).await.json();
    assert_eq!(t["name"], "Acme Inc");
    assert_eq!(t["custom_domain"], "chat.acme.test");
    assert_eq!(t["config"]["default_model"], "claude-3-5-sonnet");

    let widget = json!({
        "primary_color": "#abc", "welcome_message": "Hello", "position": "bottom_left",
        "enabled": true, "allowed_origins": ["https://shop.acme.test/path"]
    });
    let r = app
        .send(
            Method::PUT,
            "/v1/tenant/widget",
            Some(&token),
            Some(&widget),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let w = app.get("/v1/tenant/widget", Some(&token)).await.json();
    assert_eq!(w["allowed_origins"], json!(["https://shop.acme.test"]));
    assert_eq!(w["position"], "bottom_left");
}

// ----- API keys and guests -------------------------------------------------------------------

#[tokio::test]
async fn an_api_key_is_shown_once_works_in_both_headers_and_stops_when_revoked() {
    let app = app();
    app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    let r = app
        .send(
            Method::POST,
            "/v1/api-keys",
            Some(&token),
            Some(&json!({"name": "ci", "scopes": ["users_read"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let created = r.json();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("trl_"));
    assert_eq!(created["scopes"], json!(["users_read"]));

    assert_eq!(
        app.get("/v1/users", Some(&key)).await.status,
        StatusCode::OK
    );
    let req = Request::get("/v1/users")
        .header("x-api-key", &key)
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.raw(req).await.status, StatusCode::OK);
    // Scoped to reading: inviting is refused.
    app.create_user(&key, "x@acme.test")
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");

    let listed = app.get("/v1/api-keys", Some(&token)).await;
    assert!(!listed.text.contains(&key));

    let id = created["id"].as_str().unwrap();
    let r = app
        .send(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json()["revoked_at"].is_string());
    app.get("/v1/users", Some(&key))
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn unknown_scopes_are_a_422_naming_scopes() {
    let app = app();
    app.tenant("acme").await;
    let token = app.admin_token("acme").await;
    let r = app
        .send(
            Method::POST,
            "/v1/api-keys",
            Some(&token),
            Some(&json!({"name": "ci", "scopes": ["godmode"]})),
        )
        .await;
    let p = r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(p["errors"][0]["field"], "scopes");
}

#[tokio::test]
async fn a_guest_from_another_tenant_can_be_admitted_and_removed() {
    let app = app();
    app.tenant("alpha").await;
    app.tenant("beta").await;
    let a = app.admin_token("alpha").await;
    let b = app.admin_token("beta").await;
    app.create_user(&b, "ben@beta.test").await;
    let r = app
        .send(
            Method::POST,
            "/v1/guests",
            Some(&a),
            Some(&json!({"home_tenant": "beta", "email": "ben@beta.test", "role": "user"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_owned();

    let r = app.login(Some("alpha"), "ben@beta.test", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let guest = r.json()["access_token"].as_str().unwrap().to_owned();
    let me = app.get("/v1/auth/me", Some(&guest)).await.json();
    assert_eq!(me["guest"], true);

    let list = app.get("/v1/guests", Some(&a)).await.json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let r = app
        .send(Method::DELETE, &format!("/v1/guests/{id}"), Some(&a), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

// ----- framework behaviour and operations ----------------------------------------------------

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = app();
    let p = app
        .get("/v1/nothing-here", None)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(p["instance"], "/v1/nothing-here");
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem() {
    let app = app();
    app.send(Method::PUT, "/healthz", None, None)
        .await
        .problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
}

#[tokio::test]
async fn a_sane_request_id_is_echoed_and_quoted_in_problems() {
    let app = app();
    let req = Request::get("/v1/users")
        .header("x-request-id", "trace-abc.123")
        .body(Body::empty())
        .unwrap();
    let r = app.raw(req).await;
    assert_eq!(r.headers["x-request-id"], "trace-abc.123");
    assert_eq!(
        r.problem(StatusCode::UNAUTHORIZED, "unauthenticated")["request_id"],
        "trace-abc.123"
    );
}

#[tokio::test]
async fn a_hostile_request_id_is_replaced_by_a_fresh_one() {
    let app = app();
    let req = Request::get("/healthz")
        .header("x-request-id", "a\"b<script>")
        .body(Body::empty())
        .unwrap();
    let r = app.raw(req).await;
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test]
async fn healthz_answers_ok() {
    let app = app();
    let r = app.get("/healthz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"status": "ok"}));
}

struct NotReady;

#[async_trait::async_trait]
impl Readiness for NotReady {
    async fn is_ready(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn readyz_is_a_503_problem_while_a_dependency_is_down() {
    let up = app();
    assert_eq!(up.get("/readyz", None).await.status, StatusCode::OK);
    let down = app_with(HttpConfig::default(), Some(Arc::new(NotReady)));
    down.get("/readyz", None)
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE, "not-ready");
}

#[tokio::test]
async fn metrics_count_a_request_by_route_template() {
    let app = app();
    app.get("/healthz", None).await;
    app.get(&format!("/v1/users/{}", uuid::Uuid::now_v7()), None)
        .await;
    let r = app.get("/metrics", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type().starts_with("text/plain"));
    assert!(
        r.text
            .contains(r#"http_requests_total{method="GET",route="/healthz",status="200"} 1"#),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains(r#"http_requests_total{method="GET",route="/v1/users/{id}",status="401"} 1"#),
        "{}",
        r.text
    );
    assert!(r.text.contains("http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn the_openapi_document_parses_and_lists_the_users_routes() {
    let app = app();
    let r = app.get("/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/v1/users"]["get"].is_object());
    assert!(doc["paths"]["/v1/users"]["post"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}

#[tokio::test]
async fn the_docs_page_is_served() {
    let app = app();
    let r = app.get("/docs/", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.to_lowercase().contains("swagger"));
}

#[tokio::test]
async fn cors_answers_only_configured_origins() {
    let app = app_with(
        HttpConfig {
            cors_allowed_origins: vec!["https://app.acme.test".into()],
            ..HttpConfig::default()
        },
        None,
    );
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/users")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .body(Body::empty())
            .unwrap()
    };
    let ok = app.raw(preflight("https://app.acme.test")).await;
    assert_eq!(
        ok.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.acme.test"
    );
    let evil = app.raw(preflight("https://evil.test")).await;
    assert!(
        evil.headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );

    let default = app_with(HttpConfig::default(), None);
    let r = default.raw(preflight("https://app.acme.test")).await;
    assert!(r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}
