//! The platform creates tenants; tenant admins shape their own settings.

use serde_json::{Value, json};
use trellis_tests::{problem, spawn_app, unique};

#[tokio::test]
async fn a_superadmin_creates_a_tenant_whose_admin_can_log_in() {
    let app = spawn_app().await;
    let root = app.superadmin().await;
    let slug = unique("acme");
    let body = json!({
        "name": "Acme", "slug": slug, "plan": "pro",
        "branding": {"primary_color": "#112233"},
        "admin": {"email": "boss@acme.example.com", "name": "Boss", "password": "boss-password-1"}
    });
    let res = app.post_json("/v1/tenants", Some(&root), &body).await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(
        (created["slug"].as_str(), created["plan"].as_str()),
        (Some(slug.as_str()), Some("pro"))
    );
    let token = app
        .login(&slug, "boss@acme.example.com", "boss-password-1")
        .await;
    let me: Value = app
        .get("/v1/auth/me", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "tenant_admin");

    let again = app.post_json("/v1/tenants", Some(&root), &body).await;
    problem(again, 409).await;
    let listed: Value = app
        .get("/v1/tenants?limit=100", Some(&root))
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"].as_array().unwrap().len() <= 100);
}

#[tokio::test]
async fn an_invalid_slug_or_colour_is_refused_with_the_field_named() {
    let app = spawn_app().await;
    let root = app.superadmin().await;
    let body = json!({
        "name": "Bad", "slug": "Not A Slug",
        "branding": {"primary_color": "red"},
        "admin": {"email": "a@b.example.com", "name": "A", "password": "long-enough-1"}
    });
    let p = problem(app.post_json("/v1/tenants", Some(&root), &body).await, 422).await;
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"slug"), "{fields:?}");
}

#[tokio::test]
async fn a_tenant_admin_sets_branding_and_widget() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let tok = Some(t.admin_token.as_str());
    let res = app
        .patch_json(
            "/v1/tenant",
            tok,
            &json!({"branding": {"logo_url": "https://cdn.example.com/l.png", "primary_color": "#AABBCC", "font_family": "Inter"}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let got: Value = app.get("/v1/tenant", tok).await.json().await.unwrap();
    assert_eq!(got["branding"]["primary_color"], "#aabbcc");

    let widget = json!({"primary_color": "#000000", "welcome_message": "Hello", "position": "bottom_left",
                        "enabled": true, "allowed_origins": ["https://shop.example.com/x"]});
    assert_eq!(
        app.put_json("/v1/tenant/widget", tok, &widget)
            .await
            .status(),
        200
    );
    let got: Value = app
        .get("/v1/tenant/widget", tok)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["allowed_origins"], json!(["https://shop.example.com"]));
    assert_eq!(got["position"], "bottom_left");
}

#[tokio::test]
async fn an_llm_api_key_is_stored_but_never_returned() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let tok = Some(t.admin_token.as_str());
    let body = json!({"provider": "openai", "model": "gpt-4o", "temperature": 0.3, "max_tokens": 1024,
                      "api_key": "sk-live-very-secret-1234"});
    let res = app.put_json("/v1/tenant/llm", tok, &body).await;
    assert_eq!(res.status(), 200);
    let text = app.get("/v1/tenant/llm", tok).await.text().await.unwrap();
    assert!(!text.contains("very-secret"), "{text}");
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (got["has_api_key"].as_bool(), got["api_key_hint"].as_str()),
        (Some(true), Some("sk-…1234"))
    );

    // Absent keeps the key; null clears it.
    let keep = json!({"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.3, "max_tokens": 1024});
    let got: Value = app
        .put_json("/v1/tenant/llm", tok, &keep)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["has_api_key"], true);
    let clear = json!({"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.3, "max_tokens": 1024, "api_key": null});
    let got: Value = app
        .put_json("/v1/tenant/llm", tok, &clear)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["has_api_key"], false);

    let hot =
        json!({"provider": "openai", "model": "gpt-4o", "temperature": 9.0, "max_tokens": 1024});
    problem(app.put_json("/v1/tenant/llm", tok, &hot).await, 422).await;
}

#[tokio::test]
async fn the_llm_key_is_sealed_in_the_database() {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let app = spawn_app().await;
    let t = app.tenant().await;
    let body = json!({"provider": "openai", "model": "gpt-4o", "temperature": 0.3, "max_tokens": 1024,
                      "api_key": "sk-plaintext-must-not-appear"});
    assert_eq!(
        app.put_json("/v1/tenant/llm", Some(&t.admin_token), &body)
            .await
            .status(),
        200
    );
    let Ok(owner) = std::env::var("TRELLIS_MIGRATION_DATABASE_URL") else {
        return;
    };
    let db = Database::connect(owner).await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!("SELECT encode(api_key_ciphertext, 'escape') AS c FROM tenant_llm_configs WHERE tenant_id = '{}'", t.id),
        ))
        .await;
    // The owner role is also subject to FORCE RLS, so it may see nothing; either way
    // the plaintext must not be there.
    if let Ok(Some(row)) = row {
        let c: String = row.try_get("", "c").unwrap_or_default();
        assert!(!c.contains("sk-plaintext"));
    }
}

#[tokio::test]
async fn a_tenant_admin_cannot_lift_their_own_user_limit() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let res = app
        .patch_json(
            "/v1/tenant",
            Some(&t.admin_token),
            &json!({"config": {"max_users": 100000}}),
        )
        .await;
    problem(res, 403).await;
}

#[tokio::test]
async fn the_platform_sets_a_user_limit_that_the_tenant_then_hits() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let root = app.superadmin().await;
    let res = app
        .patch_json(
            &format!("/v1/tenants/{}", t.id),
            Some(&root),
            &json!({"config": {"max_users": 2}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let tenant: Value = res.json().await.unwrap();
    assert_eq!(tenant["config"]["max_users"], 2);
    app.create_user(&t.admin_token, "second@example.com", "user")
        .await;
    let third = json!({"email": "third@example.com", "name": "Third", "role": "user"});
    let p = problem(
        app.post_json("/v1/users", Some(&t.admin_token), &third)
            .await,
        409,
    )
    .await;
    assert_eq!(p["type"], "https://trellis.dev/problems/limit-reached");
    // The tenant admin may still change the default model without touching the limit.
    let res = app
        .patch_json(
            "/v1/tenant",
            Some(&t.admin_token),
            &json!({"config": {"default_model": "gpt-4o"}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let got: Value = res.json().await.unwrap();
    assert_eq!(
        (
            got["config"]["default_model"].as_str(),
            got["config"]["max_users"].as_u64()
        ),
        (Some("gpt-4o"), Some(2))
    );
}
