//! Logging in, refreshing, logging out and throttling.

use serde_json::{Value, json};
use trellis_tests::{problem, spawn_app};

#[tokio::test]
async fn an_admin_logs_in_and_sees_themselves_at_me() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let res = app.get("/v1/auth/me", Some(&t.admin_token)).await;
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["user"]["email"], t.admin_email.as_str());
    assert_eq!(me["tenant_id"], t.id.as_str());
    assert_eq!(me["role"], "tenant_admin");
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "users_manage")
    );
    assert!(me["user"].get("password_hash").is_none());
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_401() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let wrong = app
        .login_raw(&t.slug, &t.admin_email, "not-the-password")
        .await;
    let wrong = problem(wrong, 401).await;
    let unknown = app
        .login_raw(&t.slug, "nobody@example.com", "not-the-password")
        .await;
    let unknown = problem(unknown, 401).await;
    let no_tenant = app
        .login_raw("no-such-tenant-xyz", &t.admin_email, "whatever-pass")
        .await;
    let no_tenant = problem(no_tenant, 401).await;
    for p in [&unknown, &no_tenant] {
        assert_eq!(wrong["type"], p["type"]);
        assert_eq!(wrong["title"], p["title"]);
        assert_eq!(wrong["detail"], p["detail"]);
    }
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_with_retry_after() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    for _ in 0..5 {
        let res = app
            .login_raw(&t.slug, &t.admin_email, "wrong-password")
            .await;
        assert_eq!(res.status(), 401);
    }
    let res = app
        .login_raw(&t.slug, &t.admin_email, &t.admin_password)
        .await;
    assert_eq!(
        res.status(),
        429,
        "even the right password waits once throttled"
    );
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0);
    let body = problem(res, 429).await;
    assert_eq!(body["type"], "https://trellis.dev/problems/throttled");
}

async fn login_session(
    app: &trellis_tests::TestApp,
    slug: &str,
    email: &str,
    password: &str,
) -> Value {
    let res = app.login_raw(slug, email, password).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn a_refresh_token_works_once_and_its_reuse_ends_the_session() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let session = login_session(&app, &t.slug, &t.admin_email, &t.admin_password).await;
    let first = session["refresh_token"].as_str().unwrap().to_owned();

    let res = app
        .post_json("/v1/auth/refresh", None, &json!({"refresh_token": first}))
        .await;
    assert_eq!(res.status(), 200);
    let rotated: Value = res.json().await.unwrap();
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let me = app
        .get("/v1/auth/me", rotated["access_token"].as_str())
        .await;
    assert_eq!(me.status(), 200);

    // Replaying the first token is theft: it fails and revokes the rotated one too.
    let replay = app
        .post_json("/v1/auth/refresh", None, &json!({"refresh_token": first}))
        .await;
    problem(replay, 401).await;
    let after = app
        .post_json("/v1/auth/refresh", None, &json!({"refresh_token": second}))
        .await;
    problem(after, 401).await;
}

#[tokio::test]
async fn logout_ends_the_session() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let session = login_session(&app, &t.slug, &t.admin_email, &t.admin_password).await;
    let rt = session["refresh_token"].as_str().unwrap();
    let res = app
        .post_json("/v1/auth/logout", None, &json!({"refresh_token": rt}))
        .await;
    assert_eq!(res.status(), 204);
    let res = app
        .post_json("/v1/auth/refresh", None, &json!({"refresh_token": rt}))
        .await;
    problem(res, 401).await;
}

#[tokio::test]
async fn tampered_and_garbage_tokens_get_401() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let mut tampered = t.admin_token.clone();
    tampered.pop();
    tampered.push(if t.admin_token.ends_with('A') {
        'B'
    } else {
        'A'
    });
    for token in [tampered.as_str(), "garbage", "trl_notakey"] {
        let res = app.get("/v1/auth/me", Some(token)).await;
        assert!(res.headers().contains_key("www-authenticate"));
        problem(res, 401).await;
    }
    problem(app.get("/v1/auth/me", None).await, 401).await;
}

#[tokio::test]
async fn a_token_signed_by_another_deployment_gets_401() {
    let app = spawn_app().await;
    let other = spawn_app().await;
    let t = other.tenant().await;
    problem(app.get("/v1/auth/me", Some(&t.admin_token)).await, 401).await;
}

#[tokio::test]
async fn a_suspended_tenant_cannot_log_in() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let root = app.superadmin().await;
    let res = app
        .patch_json(
            &format!("/v1/tenants/{}", t.id),
            Some(&root),
            &json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    problem(
        app.login_raw(&t.slug, &t.admin_email, &t.admin_password)
            .await,
        401,
    )
    .await;
}

#[tokio::test]
async fn changing_ones_password_requires_the_current_one() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let res = app
        .post_json(
            "/v1/auth/password",
            Some(&t.admin_token),
            &json!({"current_password": "wrong-password", "new_password": "brand-new-password"}),
        )
        .await;
    problem(res, 401).await;
    let res = app
        .post_json(
            "/v1/auth/password",
            Some(&t.admin_token),
            &json!({"current_password": t.admin_password, "new_password": "brand-new-password"}),
        )
        .await;
    assert_eq!(res.status(), 204);
    app.login(&t.slug, &t.admin_email, "brand-new-password")
        .await;
}
